/**
 * Whole-model training steps on builder-made BERT, T5 and Gemma/Llama-style exports: gradients
 * against central finite differences (float64, ORT CPU), SGD steps that lower the loss (float32),
 * and the step on onnxruntime-web wasm in Node giving the CPU results.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { Model } from '../../src/graph/index.js';
import { buildTrainingStep, type TrainingStepOptions } from '../../src/training/step.js';
import { loadRuntime } from '../../src/runtime/node.js';
import type { OrtTensorLike } from '../../src/verify/verify.js';
import { buildTinyGpt } from '../../examples/models.js';
import { bertFeeds, buildBert, buildDecoder, buildT5, decoderFeeds, t5Feeds, trainLosses, trainableParams } from './models.js';
import { finiteDifferenceError, ort, session, stepFeeds } from './helpers.js';

interface Case {
  name: string;
  build: (dtype: 'float' | 'double') => Model;
  feeds: () => Record<string, ort.Tensor>;
  params?: (m: Model) => string[];
  lr: number;
  /** Finite-difference step and tolerance: float32 parts of a float64 model (erf) need a wider step. */
  fd?: { h: number; tolerance: number };
}
// erf runs in float32 (rounding ~6e-8 relative): h = 1e-3 keeps that noise near 1e-5 and the truncation error O(h^2).
const BERT_FD = { h: 1e-3, tolerance: 2e-4 };
const CASES: Case[] = [
  { name: 'BERT (LayerNormalization, opset 17)', build: (dtype) => buildBert({ dtype }), feeds: () => bertFeeds(), lr: 0.3, fd: BERT_FD },
  { name: 'BERT (decomposed LayerNorm, opset 14)', build: (dtype) => buildBert({ dtype, opset: 14 }), feeds: () => bertFeeds(), lr: 0.3, fd: BERT_FD },
  { name: 'T5 encoder-decoder', build: (dtype) => buildT5({ dtype }), feeds: () => t5Feeds(), lr: 0.3 },
  { name: 'Gemma-style decoder', build: (dtype) => buildDecoder({ dtype }), feeds: () => decoderFeeds(), params: (m) => trainableParams(m), lr: 0.3 },
  { name: 'Llama-style decoder', build: (dtype) => buildDecoder({ dtype, flavor: 'llama' }), feeds: () => decoderFeeds(), params: (m) => trainableParams(m), lr: 0.3 },
];

const optionsFor = (c: Case, m: Model, extra: Partial<TrainingStepOptions> = {}): TrainingStepOptions => ({ optimizer: 'sgd', ...(c.params ? { params: c.params(m) } : {}), ...extra });

for (const c of CASES) {
  test(`${c.name} (float64): gradients match central finite differences on sampled coordinates`, { timeout: 60_000 }, async () => {
    const m = c.build('double');
    const step = buildTrainingStep(m, optionsFor(c, m, { gradients: true }));
    assert.ok(step.record.params.length >= 10, `${step.record.params.length} parameters`);
    const { h = 1e-6, tolerance = 1e-6 } = c.fd ?? {};
    const { worst, where, checked } = await finiteDifferenceError(m, step, { h, samples: 4, extra: c.feeds() });
    assert.ok(checked >= 4 * step.record.params.length, `${checked} coordinates checked`);
    assert.ok(worst < tolerance, `worst relative error ${worst} at ${where}`);
    // Symbolic dims carried through optimum's position-ids Slice and Reshape(.., [batch, -1, heads, d]): no axes found at run time.
    assert.equal(step.record.runtimeShapeFallbacks, 0);
    console.log(`# ${c.name}: ${step.record.params.length} parameters, ${checked} coordinates, worst ${worst.toExponential(2)}, ${step.model.graph.nodes.length} step nodes, ${step.record.runtimeShapeFallbacks} run-time shape fallbacks`);
  });

  test(`${c.name} (float32): SGD-momentum steps reduce the loss`, { timeout: 60_000 }, async () => {
    const m = c.build('float');
    const seen = await trainLosses(m, optionsFor(c, m, { momentum: 0.9 }), c.feeds(), c.lr, 6);
    assert.ok(seen.every(Number.isFinite), seen.join(' '));
    assert.ok(seen[5]! < seen[0]! - 0.05, `loss went ${seen.map((x) => x.toFixed(4)).join(' -> ')}`);
    console.log(`# ${c.name}: loss ${seen.map((x) => x.toFixed(4)).join(' -> ')}`);
  });
}

/** One step of `m` on node CPU and on onnxruntime-web wasm: the same loss and updated parameters within float32 rounding. */
async function compareOnWasm(m: Model, options: TrainingStepOptions, data: Record<string, ort.Tensor>): Promise<void> {
  const step = buildTrainingStep(m, options);
  const feeds = stepFeeds(m, step, 0.1, data);
  const cpu = await (await session(step.model)).run(feeds);
  const web = (await loadRuntime('wasm')).ort;
  const ws = await web.InferenceSession.create(new Uint8Array(Buffer.from(await import('../../src/graph/index.js').then((g) => g.encodeModel(step.model)))), { executionProviders: ['wasm'] });
  const webFeeds = Object.fromEntries(Object.entries(feeds).map(([k, t]) => [k, new web.Tensor(t.type, t.data, t.dims)]));
  const wasm = await ws.run(webFeeds) as Record<string, OrtTensorLike>;
  const loss = step.record.loss;
  const a = Number((cpu[loss]!.data as Float32Array)[0]), b = Number((wasm[loss]!.data as Float32Array)[0]);
  assert.ok(Number.isFinite(a) && Math.abs(a - b) <= 1e-5 * Math.max(1, Math.abs(a)), `loss: cpu ${a}, wasm ${b}`);
  for (const p of step.record.params) {
    const x = cpu[p.output]!.data as Float32Array, y = wasm[p.output]!.data as Float32Array;
    let worst = 0;
    x.forEach((v, i) => { worst = Math.max(worst, Math.abs(v - y[i]!)); });
    assert.ok(worst < 1e-5, `${p.output}: cpu and wasm differ by up to ${worst}`);
  }
}

test('the step runs on onnxruntime-web wasm in Node: tiny GPT and Gemma-style decoder give the CPU loss and updates', { timeout: 60_000 }, async () => {
  const gpt = buildTinyGpt({ vocab: 64 });
  await compareOnWasm(gpt, { optimizer: 'adamw' }, { input_ids: decoderFeeds(2, 8)['input_ids']! });
  const gemma = buildDecoder({ dtype: 'float' });
  await compareOnWasm(gemma, { optimizer: 'sgd', momentum: 0.9, params: trainableParams(gemma) }, decoderFeeds());
});
