/**
 * Export: the original forward model with the trained initializers and no NEFTune: byte-faithful
 * (unchanged weights give back the original bytes, patched or not) and it computes the logits of
 * the trained parameters on ONNX Runtime.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Tensor, decodeModel, encodeModel } from '../../src/graph/index.js';
import { Trainer, type TrainerOrt } from '../../src/training/trainer.js';
import { exportFineTuned } from '../../src/training/export.js';
import { TrainingOptionError } from '../../src/training/errors.js';
import { ort } from './helpers.js';
import { tinyLm, tinyStep, tokenBatch } from './tiny-lm.js';

const originalParams = (bytes: Uint8Array, names: string[]) => {
  const m = decodeModel(bytes);
  return names.map((n) => m.graph.initializer(n)!.initializer!);
};

test('export: unchanged weights give the original bytes back (plain, and from a NEFTune-patched model)', () => {
  const plain = encodeModel(tinyLm());
  const names = ['transformer.wte.weight', 'ln_f.bias'];
  assert.ok(Buffer.from(encodeModel(exportFineTuned(decodeModel(plain), originalParams(plain, names)).model)).equals(Buffer.from(plain)));
  const patched = decodeModel(encodeModel(tinyLm(true)));
  const result = exportFineTuned(patched, originalParams(plain, names));
  assert.equal(result.stripped, true);
  assert.ok(Buffer.from(encodeModel(result.model)).equals(Buffer.from(plain)), 'NEFTune stripped byte-exactly');
  assert.throws(() => exportFineTuned(decodeModel(plain), [Tensor.fromArray('float', [3], [1, 2, 3], 'ln_f.bias')]), (e: unknown) => e instanceof TrainingOptionError && /ln_f\.bias.*\[3\].*\[16\]/.test(e.message));
});

test('export: the fine-tuned model runs in onnxruntime-node and gives the logits of the trained parameters', { timeout: 120_000 }, async () => {
  const forward = decodeModel(encodeModel(tinyLm(true)));
  const trainer = await Trainer.create({ ort: ort as unknown as TrainerOrt, step: tinyStep(forward), initial: forward, schedule: { kind: 'constant', lr: 0.05 }, alpha: { kind: 'constant', alpha: 5 } });
  for (let k = 0; k < 4; k++) await trainer.trainStep(tokenBatch(4, 8, k));
  const params = await trainer.parameters();
  await trainer.release();
  const exported = exportFineTuned(forward, params);
  assert.deepEqual(exported.externalWrites, []);
  // Reference: the unpatched model with each initializer set from the trained values.
  const reference = tinyLm();
  for (const p of params) reference.graph.initializer(p.name!)!.initializer = Tensor.fromArray('float', p.dims, p.toArray(), p.name);
  const ids = new ort.Tensor('int64', tokenBatch(2, 8, 9).inputIds, [2, 8]);
  const [a, b] = await Promise.all([exported.model, reference].map(async (m) => {
    const s = await ort.InferenceSession.create(encodeModel(m));
    const out = await s.run({ input_ids: ids });
    await s.release();
    return out['logits']!.data as Float32Array;
  }));
  assert.ok(Buffer.from(a!.buffer).equals(Buffer.from(b!.buffer)), 'same logits, bit for bit');
  const before = await ort.InferenceSession.create(encodeModel(tinyLm()));
  const untrained = (await before.run({ input_ids: ids }))['logits']!.data as Float32Array;
  assert.ok(untrained.some((v, i) => v !== a![i]), 'training changed the logits');
});
