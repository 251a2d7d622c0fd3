/**
 * Fine-tuning end to end below the CLI: the step graph `neftune train` builds draws per-step noise
 * that follows NEFTune's law (verify's uniform-noise check), and a model with external data exports
 * its trained weights into a copy of the data file, never touching the input's.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { encodeModel } from '../../src/graph/index.js';
import { buildTrainingStep } from '../../src/training/step.js';
import { keyPatchNoise, noiseKey, NOISE_KEY_INPUT } from '../../src/training/seeded-noise.js';
import { Trainer, type TrainerOrt } from '../../src/training/trainer.js';
import { exportFineTuned } from '../../src/training/export.js';
import { checkUniformNoise } from '../../src/verify/stats.js';
import { readModelFile, saveWithExternalData } from '../../src/io/files.js';
import { saveFineTuned, withExternalDataRead } from '../../src/io/finetuned-files.js';
import { tempDir } from '../cli-helpers.js';
import { ort, stepFeeds } from './helpers.js';
import { tinyLm, tokenBatch } from './tiny-lm.js';

async function stepNoise(key: bigint, alpha: number): Promise<Float32Array> {
  const forward = tinyLm(true);
  const step = buildTrainingStep(forward, { optimizer: 'adamw', loss: 'causal-lm', extraOutputs: ['inputs_embeds', 'neftune__inputs_embeds__clean'] });
  assert.equal(keyPatchNoise(step.model), 1);
  const session = await ort.InferenceSession.create(encodeModel(step.model));
  const b = tokenBatch(4, 32);
  const out = await session.run(stepFeeds(forward, step, 0.01, {
    input_ids: new ort.Tensor('int64', b.inputIds, [4, 32]), neftune_alpha: new ort.Tensor('float32', Float32Array.from([alpha]), []),
    [NOISE_KEY_INPUT]: new ort.Tensor('uint64', BigUint64Array.from([key]), []),
  }));
  await session.release();
  const noisy = out['inputs_embeds.out']!.data as Float32Array, clean = out['neftune__inputs_embeds__clean.out']!.data as Float32Array;
  return Float32Array.from(noisy, (v, i) => v - clean[i]!);
}

test('e2e: the training step\'s NEFTune noise is U(-s, s), s = alpha / sqrt(L d), fresh per step, 0 at alpha 0', { timeout: 120_000 }, async () => {
  for (const alpha of [5, 15]) {
    const noise = await stepNoise(noiseKey(0, 3, 0), alpha);
    const check = checkUniformNoise(noise, alpha / Math.sqrt(32 * 16), { tolerance: 1e-6 });
    assert.deepEqual(check.failures, [], JSON.stringify(check));
  }
  const [a, b] = [await stepNoise(noiseKey(0, 3, 0), 5), await stepNoise(noiseKey(0, 4, 0), 5)];
  assert.ok(a.some((v, i) => v !== b[i]), 'the next step draws other noise');
  assert.ok((await stepNoise(noiseKey(0, 3, 0), 0)).every((v) => v === 0));
});

test('e2e: external-data model: trained weights go to a copy of the data file; the input\'s is never written', { timeout: 120_000 }, async () => {
  const dir = tempDir('e2e-external');
  const input = path.join(dir, 'model.onnx');
  await saveWithExternalData(tinyLm(), input, { threshold: 64 });
  const dataFile = `${input}.data`;
  const before = readFileSync(dataFile);
  const mtime = statSync(dataFile).mtimeMs;
  const loaded = readModelFile(input, { deferThreshold: Infinity });
  const trainable = withExternalDataRead(loaded);
  const trainer = await Trainer.create({ ort: ort as unknown as TrainerOrt, step: buildTrainingStep(trainable, { optimizer: 'adamw', loss: 'causal-lm' }), initial: trainable, schedule: { kind: 'constant', lr: 0.05 } });
  for (let k = 0; k < 3; k++) await trainer.trainStep(tokenBatch(4, 8, k));
  const params = await trainer.parameters();
  await trainer.release();
  const exported = exportFineTuned(loaded.model, params);
  assert.ok(exported.externalWrites.length > 0, 'the big tables are external');
  // Same folder: the copy gets its own name. Another folder: it keeps the data file's name.
  const beside = await saveFineTuned(loaded, exported, path.join(dir, 'tuned.onnx'));
  assert.deepEqual(beside.trainedData, [path.join(dir, 'tuned.onnx.data')]);
  const elsewhere = await saveFineTuned(loaded, exportFineTuned(loaded.model, params), path.join(dir, 'out', 'tuned.onnx'));
  assert.deepEqual(elsewhere.trainedData, [path.join(dir, 'out', 'model.onnx.data')]);
  loaded.close();
  assert.ok(readFileSync(dataFile).equals(before) && statSync(dataFile).mtimeMs === mtime, 'the input data file is untouched');
  const reference = exportFineTuned(trainable, params).model;
  const feeds = { input_ids: new ort.Tensor('int64', tokenBatch(2, 8).inputIds, [2, 8]) };
  const want = (await (await ort.InferenceSession.create(encodeModel(reference))).run(feeds))['logits']!.data as Float32Array;
  for (const file of [beside.path, elsewhere.path]) {
    const session = await ort.InferenceSession.create(file);
    const got = (await session.run(feeds))['logits']!.data as Float32Array;
    assert.ok(Buffer.from(got.buffer).equals(Buffer.from(want.buffer)), `${file} gives the trained logits`);
  }
  // Refused: writing the output over the input's data file name in its folder.
  await assert.rejects(saveFineTuned(readModelFile(input), exportFineTuned(readModelFile(input).model, params), dataFile), /data file|Refusing/);
});
