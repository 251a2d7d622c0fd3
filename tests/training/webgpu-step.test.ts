/**
 * Training steps on onnxruntime-web's WebGPU EP in headless Chromium (SwiftShader's Vulkan adapter:
 * no GPU needed): the tiny GPT's AdamW step, built in Node, runs a few steps with the `.new` outputs
 * fed back, and its losses and parameters match onnxruntime-node CPU; the nodes ORT placed on CPU are
 * compared with the kernels docs/training-ops.md says WebGPU lacks. A seeded NEFTune step runs too.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { encodeModel, isFloatingType, type Model } from '../../src/graph/index.js';
import { applyNeftune } from '../../src/passes/index.js';
import { inferShapes } from '../../src/training/shapes.js';
import type { TrainingStep } from '../../src/training/step.js';
import { ort, session, stepFeeds } from './helpers.js';
import { tinyLm, tinyStep, tokenBatch } from './tiny-lm.js';
import { CHROMIUM, fromWire, openStepPage, placements, toWire, type OrtBundle, type Placed, type StepPage } from './browser-runner.js';

const STEPS = 4, LR = 0.01;
/** Ops docs/training-ops.md (and ../shared/docs/training.md) list as having no WebGPU kernel. */
const DOCUMENTED_CPU_ONLY = ['ConstantOfShape', 'Dropout', 'Max', 'Min', 'Mod', 'NonZero', 'OneHot', 'Range', 'Size', 'RandomUniformLike'];

function feedsFor(forward: Model, step: TrainingStep, alpha?: number): Record<string, ort.Tensor> {
  const b = tokenBatch(2, 8);
  const extra: Record<string, ort.Tensor> = { input_ids: new ort.Tensor('int64', b.inputIds, [b.batch, b.length]) };
  if (alpha !== undefined) extra['neftune_alpha'] = new ort.Tensor('float32', Float32Array.from([alpha]), []);
  return stepFeeds(forward, step, LR, extra);
}

/** The same loop as the page's, on onnxruntime-node CPU. */
async function cpuSteps(step: TrainingStep, feeds: Record<string, ort.Tensor>): Promise<{ losses: number[]; params: Record<string, Float32Array> }> {
  const s = await session(step.model);
  const losses: number[] = [];
  for (let k = 1; k <= STEPS; k++) {
    const out = await s.run(feeds);
    losses.push((out[step.record.loss]!.data as Float32Array)[0]!);
    feeds = { ...feeds };
    for (const p of [...step.record.params, ...step.record.state]) feeds[p.input] = out[p.output]!;
    feeds[step.record.step!] = new ort.Tensor('int64', BigInt64Array.from([BigInt(k + 1)]), []);
  }
  await s.release();
  return { losses, params: Object.fromEntries(step.record.params.map((p) => [p.input, feeds[p.input]!.data as Float32Array])) };
}

function assertClose(got: ArrayLike<number>, want: ArrayLike<number>, tolerance: number, what: string): number {
  assert.equal(got.length, want.length, what);
  let worst = 0;
  for (let i = 0; i < want.length; i++) worst = Math.max(worst, Math.abs(got[i]! - want[i]!) / (1 + Math.abs(want[i]!)));
  assert.ok(worst <= tolerance, `${what}: worst relative difference ${worst} > ${tolerance} (got ${Array.from(got).slice(0, 6)}, want ${Array.from(want).slice(0, 6)})`);
  return worst;
}

/** CPU-placed nodes, split into the documented kernel gaps, other ops reading float data, and integer (shape / index / step) paths. */
function classify(step: TrainingStep, placed: Placed[]) {
  const shapes = inferShapes(step.model.graph, step.model.opsetVersion('') ?? 0);
  const byName = new Map(step.model.graph.nodes.map((n) => [n.name, n]));
  const outputs = new Set(step.model.graph.outputs);
  const documented: string[] = [], float: string[] = [], integer: string[] = [], outputCopies: string[] = [];
  for (const { op, node } of placed) {
    const n = byName.get(node);
    assert.ok(n, `ORT placed "${node}" (${op}) on CPU but the step graph has no such node`);
    if (DOCUMENTED_CPU_ONLY.includes(op)) documented.push(op);
    // JSEP runs some Identity nodes that write graph outputs on CPU: a download, not compute.
    else if (op === 'Identity' && outputs.has(n.outputs[0]!)) outputCopies.push(n.outputs[0]!.name);
    else if (n.inputs.some((v) => v && isFloatingType(shapes.elem(v) ?? 0))) float.push(`${op} (${node})`);
    else integer.push(op);
  }
  return { documented, float, integer, outputCopies };
}

async function gpuOrSkip(t: { skip(message: string): void }): Promise<StepPage | undefined> {
  const page = await openStepPage();
  const adapter = await page.adapter();
  if (adapter.ok) return page;
  await page.close();
  t.skip(`no WebGPU adapter in headless Chromium (${adapter.reason}); the test needs Chromium with SwiftShader's Vulkan (Debian's chromium has it)`);
  return undefined;
}

const skip = CHROMIUM ? false : 'Chromium not found (apt-get install chromium, or set CHROMIUM); .ci/run installs it';

test('tiny GPT AdamW step on WebGPU (native EP and JSEP) matches onnxruntime-node CPU; CPU fallbacks are the documented ones plus LogSoftmax and integer paths', { skip, timeout: 300_000 }, async (t) => {
  const page = await gpuOrSkip(t);
  if (!page) return;
  try {
    const forward = tinyLm();
    const step = tinyStep(forward);
    const feeds = feedsFor(forward, step);
    const cpu = await cpuSteps(step, feeds);
    assert.ok(cpu.losses[STEPS - 1]! < cpu.losses[0]! - 0.1, `CPU loss falls: ${cpu.losses}`);
    for (const bundle of ['webgpu', 'jsep'] satisfies OrtBundle[]) {
      const run = await page.runSteps(encodeModel(step.model), feeds, step.record, { ep: 'webgpu', bundle, steps: STEPS });
      const worstLoss = assertClose(run.losses, cpu.losses, 1e-4, `${bundle}: losses vs CPU`);
      let worstParam = 0;
      for (const p of step.record.params) worstParam = Math.max(worstParam, assertClose(fromWire(run.params[p.input]!), cpu.params[p.input]!, 1e-4, `${bundle}: ${p.input} after ${STEPS} steps`));
      const eps = placements(run.log);
      assert.ok(eps, `${bundle}: the verbose log shows no node placement (last lines: ${run.log.slice(-5).join(' | ')})`);
      const placed = eps.get('CPUExecutionProvider') ?? [];
      const onGpu = [...eps].filter(([ep]) => ep !== 'CPUExecutionProvider').flatMap(([, nodes]) => nodes);
      assert.ok(onGpu.length > placed.length, `${bundle}: most nodes run on the GPU EP (${[...eps.keys()]})`);
      const { documented, float, integer, outputCopies } = classify(step, placed);
      // No documented gap runs on the GPU EP: each such node is on CPU or was folded away by ORT.
      const gapsOnGpu = onGpu.filter((p) => DOCUMENTED_CPU_ONLY.includes(p.op));
      assert.deepEqual(gapsOnGpu, [], `${bundle}: documented CPU-only ops placed on the GPU EP`);
      const folded = step.model.graph.nodes.filter((n) => DOCUMENTED_CPU_ONLY.includes(n.opType) && !placed.some((p) => p.node === n.name)).map((n) => n.opType);
      // The one float op the docs did not list: the causal-LM loss's LogSoftmax (WebGPU has Softmax only).
      assert.deepEqual(float, ['LogSoftmax (grad__LogSoftmax)'], `${bundle}: float nodes on CPU`);
      // The heavy float work stays on the GPU.
      for (const node of ['wte_lookup', 'MatMul', 'LayerNormalization']) assert.ok(!placed.some((p) => p.node === node), `${bundle}: ${node} ran on CPU`);
      t.diagnostic(`${bundle}: losses ${run.losses.map((x) => x.toFixed(5)).join(' ')} (CPU ${cpu.losses.map((x) => x.toFixed(5)).join(' ')}); worst relative difference loss ${worstLoss.toExponential(1)}, params ${worstParam.toExponential(1)}; ${placed.length} of ${placed.length + onGpu.length} nodes on CPU (ORT's optimized graph; the step graph has ${step.model.graph.nodes.length}): documented ${[...new Set(documented)]}, float ${float}, integer paths ${[...new Set(integer)]}, output copies ${outputCopies.length}; documented ops folded away by ORT: ${folded}`);
    }
  } finally {
    await page.close();
  }
});

test('seeded NEFTune step on WebGPU: alpha 0 matches node CPU; alpha 5 matches wasm in the same browser (node CPU draws other seeded noise)', { skip, timeout: 300_000 }, async (t) => {
  const page = await gpuOrSkip(t);
  if (!page) return;
  try {
    const forward = tinyLm();
    applyNeftune(forward, { alphaInput: true, seed: 7 });
    const step = tinyStep(forward);
    const model = encodeModel(step.model);
    const quiet = feedsFor(forward, step, 0), noisy = feedsFor(forward, step, 5);

    const gpuQuiet = await page.runSteps(model, quiet, step.record, { ep: 'webgpu', bundle: 'webgpu', steps: STEPS });
    assertClose(gpuQuiet.losses, (await cpuSteps(step, quiet)).losses, 1e-4, 'alpha 0: WebGPU vs CPU losses');
    assert.ok(placements(gpuQuiet.log)?.get('CPUExecutionProvider')?.some((p) => p.op === 'RandomUniformLike'), 'the noise is drawn on CPU (no WebGPU RandomUniformLike)');

    const gpu = await page.runSteps(model, noisy, step.record, { ep: 'webgpu', bundle: 'webgpu', steps: STEPS });
    const wasm = await page.runSteps(model, noisy, step.record, { ep: 'wasm', bundle: 'webgpu', steps: STEPS });
    const worst = assertClose(gpu.losses, wasm.losses, 1e-4, 'alpha 5: WebGPU vs wasm losses (same CPU noise kernel)');
    // The noise is real: alpha 5 moves the loss away from alpha 0 from the first step.
    assert.ok(Math.abs(gpu.losses[0]! - gpuQuiet.losses[0]!) > 1e-3, `alpha 5 loss ${gpu.losses[0]} vs alpha 0 ${gpuQuiet.losses[0]}`);
    const cpu = await cpuSteps(step, noisy);
    t.diagnostic(`alpha 5 losses: WebGPU ${gpu.losses.map((x) => x.toFixed(5)).join(' ')}, wasm ${wasm.losses.map((x) => x.toFixed(5)).join(' ')} (worst ${worst.toExponential(1)}), node CPU ${cpu.losses.map((x) => x.toFixed(5)).join(' ')}`);
  } finally {
    await page.close();
  }
});

// The wire format the page decodes: pinned here so a mismatch shows as itself, not as a wrong loss.
test('browser runner: tensors cross into the page byte for byte', () => {
  const t = new ort.Tensor('float32', Float32Array.from([1.5, -2, 3e-8]), [3]);
  assert.deepEqual(Array.from(fromWire(toWire(t))), Array.from(t.data as Float32Array));
  assert.throws(() => toWire(new ort.Tensor('float64', Float64Array.from([1]), [1])), /no wire form for float64/);
});
