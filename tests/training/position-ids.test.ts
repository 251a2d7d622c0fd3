/**
 * Models that take position_ids as an input: the Trainer supplies 0..L-1 per row when the batch has
 * none (packed batches carry their own), and every NEFTune mode's chain (hf, mask, packed) is
 * understood by shape inference, so the step builds and trains on ONNX Runtime.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { DataType, Value, tensorType, type Model } from '../../src/graph/index.js';
import { applyNeftune } from '../../src/passes/index.js';
import { RESERVED_PREFIX } from '../../src/passes/neftune/record.js';
import { inferShapes } from '../../src/training/shapes.js';
import { Batcher } from '../../src/training/data.js';
import { Trainer, type TrainerOrt } from '../../src/training/trainer.js';
import { buildTinyGpt } from '../../examples/models.js';
import { ort } from './helpers.js';
import { VOCAB, tinyStep, tokenBatch } from './tiny-lm.js';

const cpu = ort as unknown as TrainerOrt;
const MODES = ['hf', 'mask', 'packed'] as const;

/** The tiny GPT reading position_ids, plus an attention_mask input (the causal-LM loss reads it; mask mode too). */
function gptWithPositions(): Model {
  const m = buildTinyGpt({ vocab: VOCAB, positionIdsInput: true });
  const mask = new Value('attention_mask');
  mask.info = { name: mask.name, type: tensorType(DataType.INT64, ['batch', 'sequence']) };
  m.graph.addInput(mask);
  return m;
}

test('shape inference knows the rank and type of every value each NEFTune mode adds', () => {
  for (const mode of MODES) {
    const m = gptWithPositions();
    applyNeftune(m, { mode, alphaInput: true });
    const shapes = inferShapes(m.graph, 17);
    const added = [...m.graph].filter((n) => n.name?.startsWith(RESERVED_PREFIX));
    assert.ok(added.length > 5, `${mode}: the patch added its chain`);
    for (const n of added) {
      for (const o of n.outputs) {
        assert.ok(shapes.rank(o) !== undefined && shapes.elem(o) !== undefined, `${mode}: ${n.opType} "${n.name}" output ${o!.name} has unknown rank or type`);
      }
    }
  }
});

test('position_ids input: every NEFTune mode builds a step and the Trainer trains it (loss falls)', { timeout: 180_000 }, async () => {
  for (const mode of MODES) {
    const forward = gptWithPositions();
    applyNeftune(forward, { mode, alphaInput: true });
    const step = tinyStep(forward);
    assert.ok(step.record.inputs.includes('position_ids'), `${mode}: the step reads position_ids`);
    const trainer = await Trainer.create({ ort: cpu, step, initial: forward, schedule: { kind: 'constant', lr: 0.02 }, alpha: { kind: 'constant', alpha: 5 } });
    const losses: number[] = [];
    for (let k = 0; k < 12; k++) losses.push((await trainer.trainStep(tokenBatch(4, 8, (k % 3) * 4))).loss);
    await trainer.release();
    assert.ok(losses.every(Number.isFinite), `${mode}: ${losses}`);
    assert.ok(losses.at(-1)! < losses[0]! - 0.1, `${mode}: loss ${losses[0]} -> ${losses.at(-1)}`);
  }
});

test('the Trainer feeds position ids 0..L-1 per row: same loss as the model computing them itself', { timeout: 60_000 }, async () => {
  const schedule = { kind: 'constant', lr: 0 } as const;
  const batch = tokenBatch(3, 8);
  const losses: number[] = [];
  for (const positionIdsInput of [true, false]) {
    const forward = buildTinyGpt({ vocab: VOCAB, positionIdsInput });
    const trainer = await Trainer.create({ ort: cpu, step: tinyStep(forward), initial: forward, schedule });
    losses.push((await trainer.trainStep(batch)).loss);
    await trainer.release();
  }
  assert.equal(losses[0], losses[1]);
});

test('packed batches keep their own restarting position ids', { timeout: 60_000 }, async () => {
  const forward = buildTinyGpt({ vocab: VOCAB, positionIdsInput: true });
  applyNeftune(forward, { mode: 'packed', alphaInput: true });
  const rows = Array.from({ length: 6 }, (_, r) => ({ inputIds: Int32Array.from({ length: 4 + r }, (_, j) => (r * 5 + j * 3) % VOCAB) }));
  const { batch } = new Batcher(rows, { batchSize: 2, maxLength: 16, pack: true, shuffle: false }).next();
  assert.ok(batch.positionIds && batch.positionIds.some((p, i) => p === 0n && i % batch.length > 0), 'the packed batch restarts positions inside a row');
  const schedule = { kind: 'constant', lr: 0 } as const;
  const own = await Trainer.create({ ort: cpu, step: tinyStep(forward), initial: forward, schedule });
  const packed = (await own.trainStep(batch)).loss;
  const counted = (await own.trainStep({ ...batch, positionIds: undefined })).loss;
  await own.release();
  assert.ok(Number.isFinite(packed) && packed !== counted, `packed positions change the loss (${packed} vs ${counted})`);
});
