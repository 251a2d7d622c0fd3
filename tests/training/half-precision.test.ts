/**
 * float16 / bfloat16 models train with float32 master weights (mixed precision) on onnxruntime-node's
 * CPU EP, which has no float16 ScatterND add and whose JS API cannot make bfloat16 tensors; the
 * export rounds the masters back to the model's dtype (nearest even) and keeps its layout.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { DataType, encodeModel, float32ToBfloat16Bits, float32ToFloat16Bits } from '../../src/graph/index.js';
import { applyNeftune } from '../../src/passes/index.js';
import { Trainer, type TrainerOrt } from '../../src/training/trainer.js';
import { exportFineTuned } from '../../src/training/export.js';
import { buildTinyGpt } from '../../examples/models.js';
import { ort } from './helpers.js';
import { VOCAB, tinyStep, tokenBatch } from './tiny-lm.js';

const cpu = ort as unknown as TrainerOrt;
const TABLES = ['transformer.wte.weight', 'transformer.wpe.weight'];

for (const [dtype, type, round] of [['float16', DataType.FLOAT16, float32ToFloat16Bits], ['bfloat16', DataType.BFLOAT16, float32ToBfloat16Bits]] as const) {
  test(`${dtype}: float32 master weights train (loss falls, NEFTune on) and export back to ${dtype}`, { timeout: 120_000 }, async () => {
    const forward = buildTinyGpt({ vocab: VOCAB, dtype });
    applyNeftune(forward, { alphaInput: true });
    const step = tinyStep(forward);
    for (const name of TABLES) {
      assert.deepEqual(step.record.params.find((p) => p.input === name), { input: name, output: `${name}.new`, masterWeights: 'float32', dtype });
      assert.equal(step.model.graph.inputs.find((v) => v.name === name)!.elemType, DataType.FLOAT);
    }
    const trainer = await Trainer.create({ ort: cpu, step, initial: forward, schedule: { kind: 'constant', lr: 0.02 }, alpha: { kind: 'constant', alpha: 5 }, seed: 1 });
    const losses: number[] = [];
    for (let k = 0; k < 12; k++) losses.push((await trainer.trainStep(tokenBatch(4, 8, (k % 3) * 4))).loss);
    const trained = await trainer.parameters();
    await trainer.release();
    assert.ok(losses.every(Number.isFinite) && losses.at(-1)! < losses[0]! - 1, `loss ${losses.map((l) => l.toFixed(3)).join(' ')}`);

    const { model } = exportFineTuned(forward, trained);
    for (const name of TABLES) {
      const before = forward.graph.initializer(name)!.initializer!, after = model.graph.initializer(name)!.initializer!;
      assert.equal(after.dataType, type);
      assert.deepEqual(after.dims, before.dims);
      const master = trained.find((t) => t.name === name)!.toArray() as Float32Array;
      assert.deepEqual(Array.from(after.toArray() as Uint16Array), Array.from(master, round), `${name}: the float32 master rounded to nearest even`);
      assert.notDeepEqual(after.toArray(), before.toArray(), `${name} was trained`);
    }
    // The exported model runs as the original does.
    const session = await ort.InferenceSession.create(encodeModel(model));
    const batch = tokenBatch(2, 8);
    const { logits } = await session.run({ input_ids: new ort.Tensor('int64', batch.inputIds, [2, 8]) });
    assert.ok((logits!.data as Float32Array).every(Number.isFinite));
    await session.release();
  });
}
