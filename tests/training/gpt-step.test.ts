/**
 * Whole-model training steps on the builder's tiny GPT: causal-LM loss appended, gradients against
 * finite differences (float64 copy of the model), SGD/AdamW steps that lower the loss, and a
 * NEFTune patch composing with the step (alpha 0 bit-identical, alpha 5 = noisy-embedding gradients).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { DataType, Node, Tensor, Value, tensorType, type Model } from '../../src/graph/index.js';
import { applyNeftune } from '../../src/passes/index.js';
import { buildTrainingStep, TRAINING_STEP_METADATA_KEY } from '../../src/training/step.js';
import { TrainingOptionError } from '../../src/training/errors.js';
import { buildTinyGpt } from '../../examples/models.js';
import { finiteDifferenceError, ort, session, stepFeeds } from './helpers.js';

const BATCH = 2, SEQ = 8, VOCAB = 64;
const ids = () => new ort.Tensor('int64', BigInt64Array.from({ length: BATCH * SEQ }, (_, i) => BigInt((i * 7 + 3) % VOCAB)), [BATCH, SEQ]);

/** The same model in float64: float initializers and declared float types become double. */
function toFloat64(model: Model): Model {
  for (const v of model.graph.initializers) {
    const t = v.initializer!;
    if (t.dataType !== DataType.FLOAT) continue;
    v.initializer = Tensor.fromArray(DataType.DOUBLE, t.dims, Float64Array.from(t.toArray() as Float32Array), v.name);
  }
  for (const v of [...model.graph.inputs, ...model.graph.outputs]) {
    if (v.elemType === DataType.FLOAT) v.info = { name: v.name, type: tensorType(DataType.DOUBLE, v.shape) };
  }
  return model;
}

test('tiny GPT (float64): causal-LM step gradients match finite differences on sampled coordinates', { timeout: 60_000 }, async () => {
  const m = toFloat64(buildTinyGpt({ vocab: VOCAB }));
  const step = buildTrainingStep(m, { optimizer: 'sgd', gradients: true });
  assert.deepEqual(step.record.params.map((p) => p.input).sort(), ['ln_f.bias', 'ln_f.weight', 'transformer.wpe.weight', 'transformer.wte.weight']);
  assert.equal(step.record.runtimeShapeFallbacks, 0, 'symbolic dims (batch, sequence) carried through Shape/Gather/Range: no run-time axes');
  const { worst, where, checked } = await finiteDifferenceError(m, step, { samples: 5, extra: { input_ids: ids() } });
  assert.ok(checked >= 12);
  assert.ok(worst < 1e-6, `worst relative error ${worst} at ${where}`);
  // Parameters are plain inputs (no initializer), and the record names every pair.
  const inputs = new Set(step.model.graph.inputs.map((v) => v.name));
  for (const p of step.record.params) {
    assert.ok(inputs.has(p.input) && !step.model.graph.initializer(p.input), `${p.input} is a plain graph input`);
    assert.equal(p.output, `${p.input}.new`);
  }
  assert.deepEqual(JSON.parse(step.model.metadata.get(TRAINING_STEP_METADATA_KEY)!), step.record);
});

async function losses(m: Model, optimizer: 'sgd' | 'adamw', lr: number, steps: number, extra: Record<string, ort.Tensor> = {}): Promise<number[]> {
  const step = buildTrainingStep(m, { optimizer, ...(optimizer === 'sgd' ? { momentum: 0.9 } : {}) });
  const s = await session(step.model);
  let feeds = stepFeeds(m, step, lr, { input_ids: ids(), ...extra });
  const seen: number[] = [];
  for (let k = 1; k <= steps; k++) {
    const out = await s.run(feeds);
    seen.push(Number((out[step.record.loss]!.data as Float32Array)[0]));
    const next = { ...feeds };
    for (const p of [...step.record.params, ...step.record.state]) next[p.input] = out[p.output]!;
    if (step.record.step) next[step.record.step] = new ort.Tensor('int64', BigInt64Array.from([BigInt(k + 1)]), []);
    feeds = next;
  }
  await s.release();
  return seen;
}

test('tiny GPT (float32): a few SGD-momentum and AdamW steps reduce the loss', { timeout: 60_000 }, async () => {
  for (const [optimizer, lr] of [['sgd', 0.5], ['adamw', 0.01]] as const) {
    const seen = await losses(buildTinyGpt({ vocab: VOCAB }), optimizer, lr, 6);
    assert.ok(seen.every(Number.isFinite), `${optimizer}: ${seen}`);
    assert.ok(seen[5]! < seen[0]! - 0.05, `${optimizer}: loss went ${seen.map((x) => x.toFixed(4)).join(' -> ')}`);
  }
});

test('frozen parameters stay initializers; an unknown parameter or missing loss is a typed error', () => {
  const m = buildTinyGpt({ vocab: VOCAB });
  const step = buildTrainingStep(m, { optimizer: 'adamw', params: ['transformer.wte.weight'] });
  assert.deepEqual(step.record.params.map((p) => p.input), ['transformer.wte.weight']);
  assert.deepEqual(step.record.state.map((s) => s.kind), ['exp_avg', 'exp_avg_sq']);
  assert.ok(step.model.graph.initializer('transformer.wpe.weight'), 'wpe stays an initializer');
  assert.ok(step.record.frozen.includes('transformer.wpe.weight'));
  assert.throws(() => buildTrainingStep(m, { optimizer: 'sgd', params: ['nope'] }), (e: unknown) => e instanceof TrainingOptionError && e.code === 'BAD_OPTION' && /"nope"/.test(e.message));
  assert.throws(() => buildTrainingStep(m, { optimizer: 'sgd', loss: 'labels:' }), /names no labels input/);
  assert.throws(() => buildTrainingStep(m, { optimizer: 'sgd', loss: 'output:logits' }), /shape \[batch, sequence, 64\].*scalar loss/);
});

test('NEFTune composes: alpha 0 is bit-identical to the unpatched step, alpha 5 gives the noisy-embedding gradients', { timeout: 60_000 }, async () => {
  const plain = buildTinyGpt({ vocab: VOCAB });
  const patched = buildTinyGpt({ vocab: VOCAB });
  applyNeftune(patched, { alphaInput: true });
  const clean = 'neftune__inputs_embeds__clean';
  const plainStep = buildTrainingStep(plain, { optimizer: 'sgd', gradients: true });
  const patchedStep = buildTrainingStep(patched, { optimizer: 'sgd', gradients: true, extraOutputs: ['inputs_embeds', clean] });
  const alpha = (a: number) => ({ neftune_alpha: new ort.Tensor('float32', Float32Array.from([a]), []) });

  const ps = await session(plainStep.model), qs = await session(patchedStep.model);
  const a = await ps.run(stepFeeds(plain, plainStep, 0.1, { input_ids: ids() }));
  const b = await qs.run(stepFeeds(patched, patchedStep, 0.1, { input_ids: ids(), ...alpha(0) }));
  for (const name of [plainStep.record.loss, ...plainStep.record.params.flatMap((p) => [p.output, p.grad!])]) {
    assert.deepEqual(Buffer.from((b[name]!.data as Float32Array).buffer), Buffer.from((a[name]!.data as Float32Array).buffer), `${name} is bit-identical at alpha 0`);
  }

  // Reference: the unpatched model with the noise the patched step drew added as an input.
  const noisy = await qs.run(stepFeeds(patched, patchedStep, 0.1, { input_ids: ids(), ...alpha(5) }));
  const cleanValues = noisy[`${clean}.out`]!.data as Float32Array, noisyValues = noisy['inputs_embeds.out']!.data as Float32Array;
  const noise = Float32Array.from(noisyValues, (v, i) => v - cleanValues[i]!);
  assert.ok(noise.some((v) => v !== 0), 'alpha 5 adds noise');
  const reference = buildTinyGpt({ vocab: VOCAB });
  const lookup = reference.graph.value('inputs_embeds')!;
  const noiseInput = reference.graph.addInput(new Value('noise'));
  noiseInput.info = { name: 'noise', type: tensorType(DataType.FLOAT, ['batch', 'sequence', 16]) };
  const withNoise = new Value('inputs_embeds_noisy');
  const add = new Node('Add', [lookup, noiseInput], [withNoise], { name: 'add_noise' });
  lookup.replaceAllUsesWith(withNoise, { except: [add] });
  reference.graph.insertAfter(lookup.producer!, add);
  const refStep = buildTrainingStep(reference, { optimizer: 'sgd', gradients: true });
  const rs = await session(refStep.model);
  const r = await rs.run(stepFeeds(reference, refStep, 0.1, { input_ids: ids(), noise: new ort.Tensor('float32', noise, [BATCH, SEQ, 16]) }));
  for (const p of refStep.record.params) {
    const got = noisy[p.grad!]!.data as Float32Array, want = r[p.grad!]!.data as Float32Array;
    let worst = 0;
    want.forEach((w, i) => { worst = Math.max(worst, Math.abs(got[i]! - w) / (1e-3 + Math.abs(w))); });
    assert.ok(worst < 1e-3, `${p.grad}: worst relative difference ${worst}`);
  }
  // And the noise mattered: the alpha-5 gradients differ from the clean ones.
  assert.notDeepEqual(Array.from(noisy['transformer.wte.weight.grad']!.data as Float32Array), Array.from(a['transformer.wte.weight.grad']!.data as Float32Array));
  await Promise.all([ps.release(), qs.release(), rs.release()]);
});
