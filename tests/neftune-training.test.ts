import { test } from 'node:test';
import assert from 'node:assert/strict';
import { decodeModel, encodeModel, type Model } from '../src/graph/index.js';
import { applyNeftune, looksLikeTrainingGraph } from '../src/passes/index.js';
import { buildTinyGpt, buildTinyTrainingGraph, randomFloats } from '../examples/models.js';
import { checkUniformNoise } from '../src/verify/stats.js';
import { asNumbers, floatScalar, int64Tensor, ort, sessionFor } from './ort-helpers.js';

const V = 32, D = 16, C = 4, B = 3, L = 10;

function feeds(): Record<string, ort.Tensor> {
  return {
    input_ids: int64Tensor(Array.from({ length: B * L }, (_, i) => (i * 5) % V), [B, L]),
    target: new ort.Tensor('float32', randomFloats(B * L * C, 5), [B, L, C]),
    'embedding.weight': new ort.Tensor('float32', randomFloats(V * D, 6), [V, D]),
    'head.weight': new ort.Tensor('float32', randomFloats(D * C, 7), [D, C]),
  };
}

/** Exposes the (noisy, after patching) embedding activation so the test can recompute gradients. */
function withActivation(model: Model): Model {
  const act = model.graph.value('embedding_output')!;
  act.info = { name: act.name, type: { tensor_type: { elem_type: 1 } } };
  model.graph.addOutput(act);
  return model;
}

test('training graph: forward and backward run before and after patching; backward sees the noisy activation', async () => {
  const base = withActivation(buildTinyTrainingGraph({ vocab: V, dim: D, classes: C }));
  assert.ok(looksLikeTrainingGraph(base));
  const patched = decodeModel(encodeModel(base));
  const result = applyNeftune(patched, { alphaInput: true, seed: 3 });
  assert.deepEqual(result.warnings, [], 'a seeded patch of a training graph gets no warning');
  assert.equal(result.record.sites[0]!.table, 'embedding.weight');
  assert.equal(result.record.sites[0]!.value, 'embedding_output');

  const [clean, noisy] = [await sessionFor(base), await sessionFor(patched)];
  const f = feeds();
  const before = await clean.run(f);
  const zero = await noisy.run({ ...f, neftune_alpha: floatScalar(0) });
  for (const name of clean.outputNames) {
    assert.deepEqual(asNumbers(zero[name]!), asNumbers(before[name]!), `alpha 0: ${name} equals the unpatched run bit for bit`);
  }

  const after = await noisy.run({ ...f, neftune_alpha: floatScalar(5) });
  const act = asNumbers(after['embedding_output']!);
  const cleanAct = asNumbers(before['embedding_output']!);
  const check = checkUniformNoise(act.map((x, i) => x - cleanAct[i]!), 5 / Math.sqrt(L * D));
  assert.ok(check.ok, check.failures.join('; '));

  // head.weight_grad = act^T . dlogits, with dlogits = 2 (act . W - target) / N, recomputed here from
  // the activation the graph reported: equal only if the backward read the noisy activation.
  const W = asNumbers(f['head.weight']!), T = asNumbers(f['target']!);
  const N = B * L * C;
  const expected = new Float64Array(D * C);
  for (let t = 0; t < B * L; t++) {
    for (let c = 0; c < C; c++) {
      let logit = 0;
      for (let k = 0; k < D; k++) logit += act[t * D + k]! * W[k * C + c]!;
      const g = (2 * (logit - T[t * C + c]!)) / N;
      for (let k = 0; k < D; k++) expected[k * C + c] += act[t * D + k]! * g;
    }
  }
  const got = asNumbers(after['head.weight_grad']!);
  const cleanGrad = asNumbers(before['head.weight_grad']!);
  let maxErr = 0, maxShift = 0;
  for (let i = 0; i < got.length; i++) {
    maxErr = Math.max(maxErr, Math.abs(got[i]! - expected[i]!));
    maxShift = Math.max(maxShift, Math.abs(got[i]! - cleanGrad[i]!));
  }
  assert.ok(maxErr < 1e-5, `weight gradient matches the noisy activation (max error ${maxErr})`);
  assert.ok(maxShift > 1e-3, `and differs from the clean gradient (max shift ${maxShift})`);
  // The table gradient flows through the noise unchanged (d noisy / d clean = I): it is the
  // scatter of the upstream gradient, which now depends on the noisy forward pass.
  assert.notDeepEqual(asNumbers(after['embedding.weight_grad']!), asNumbers(before['embedding.weight_grad']!));
});

test('an inference graph is patched with a warning that NEFTune is for training', () => {
  const model = buildTinyGpt();
  assert.equal(looksLikeTrainingGraph(model), false);
  const result = applyNeftune(model);
  assert.equal(result.warnings.length, 2);
  assert.match(result.warnings[0]!, /No seed: ONNX Runtime restarts the noise sequence with every new session/);
  assert.match(result.warnings[1]!, /eval or inference graph.*training-time method/);
  assert.deepEqual(applyNeftune(buildTinyGpt(), { seed: 1 }).warnings.length, 1, 'a seeded patch is not warned about sessions');
});

test('a training-step graph built by this project counts as a training graph: patching it does not warn about inference', async () => {
  const { buildTrainingStep, TRAINING_STEP_METADATA_KEY } = await import('../src/training/index.js');
  const step = buildTrainingStep(buildTinyGpt(), { optimizer: 'sgd' }).model;
  assert.ok(step.metadata.get(TRAINING_STEP_METADATA_KEY));
  assert.equal(looksLikeTrainingGraph(step), true);
  const result = applyNeftune(step, { seed: 1 });
  assert.deepEqual(result.warnings, []);
});
