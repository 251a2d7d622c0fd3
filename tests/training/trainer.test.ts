/**
 * The Trainer on the builder's tiny causal LM (ONNX Runtime, CPU and wasm): the loss falls, N
 * accumulated micro-batches equal one batch, a resumed run is bit-identical to an uninterrupted
 * one (NEFTune on), the keyed noise follows U(-s, s) and is the same in every session and runtime.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Node, Value, tensorType, DataType, encodeModel } from '../../src/graph/index.js';
import { Trainer, maxSequenceLength, sequenceLimit, type StepEvent, type TrainerOrt } from '../../src/training/trainer.js';
import { TrainingRunError } from '../../src/training/errors.js';
import { buildTinyGemma, buildTinyGpt, buildTinyT5 } from '../../examples/models.js';
import { keyPatchNoise, noiseKey, NOISE_KEY_INPUT } from '../../src/training/seeded-noise.js';
import { CheckpointMismatchError } from '../../src/training/checkpoint.js';
import { learningRateAt, alphaAt } from '../../src/training/schedules.js';
import { checkUniformNoise } from '../../src/verify/stats.js';
import { loadRuntime } from '../../src/runtime/node.js';
import { ort } from './helpers.js';
import { tinyLm, tinyStep, tokenBatch, rowsOf } from './tiny-lm.js';
import type { TokenBatch } from '../../src/training/batch.js';

const cpu = ort as unknown as TrainerOrt;
const batches = (n: number) => Array.from({ length: n }, (_, k) => tokenBatch(4, 8, k * 4));
const bits = (t: { rawBytes(): Uint8Array }) => Buffer.from(t.rawBytes());

async function run(trainer: Trainer, data: ReturnType<typeof batches>, from = 0): Promise<StepEvent[]> {
  const events: StepEvent[] = [];
  for (const b of data.slice(from)) events.push(await trainer.trainStep(b));
  return events;
}

test('trainer: AdamW with NEFTune and a cosine warm-up schedule lowers the loss; events carry lr, alpha, tokens', { timeout: 120_000 }, async () => {
  const forward = tinyLm(true);
  const seen: StepEvent[] = [];
  const trainer = await Trainer.create({
    ort: cpu, step: tinyStep(forward), initial: forward, seed: 3, onStep: (e) => seen.push(e),
    schedule: { kind: 'cosine', lr: 0.02, warmupSteps: 3, totalSteps: 30 }, alpha: { kind: 'constant', alpha: 5 },
  });
  const data = batches(30).map((_, k) => tokenBatch(4, 8, (k % 3) * 4));
  await run(trainer, data);
  await trainer.release();
  assert.equal(seen.length, 30);
  assert.deepEqual(seen.map((e) => e.step), Array.from({ length: 30 }, (_, k) => k + 1));
  assert.equal(seen[0]!.lr, 0, 'warm-up starts at 0 (as transformers schedulers)');
  assert.ok(Math.abs(seen[3]!.lr - 0.02) < 1e-12 && seen[29]!.lr < 0.001);
  assert.ok(seen.every((e) => e.alpha === 5 && e.tokens === 32 && Number.isFinite(e.loss)));
  const first = seen.slice(0, 3).reduce((a, e) => a + e.loss, 0) / 3, last = seen.slice(-3).reduce((a, e) => a + e.loss, 0) / 3;
  assert.ok(last < first - 0.3, `loss ${first.toFixed(3)} -> ${last.toFixed(3)}`);
});

test('schedules: linear/cosine warm-up and decay, alpha linear decay and off after N', () => {
  assert.deepEqual([0, 1, 2, 6, 10].map((s) => learningRateAt({ kind: 'linear', lr: 1, warmupSteps: 2, totalSteps: 10 }, s)), [0, 0.5, 1, 0.5, 0]);
  assert.ok(Math.abs(learningRateAt({ kind: 'cosine', lr: 1, totalSteps: 10 }, 5) - 0.5) < 1e-12);
  assert.equal(learningRateAt({ kind: 'constant', lr: 0.3 }, 1000), 0.3);
  assert.deepEqual([0, 5, 10, 20].map((s) => alphaAt({ kind: 'linear', alpha: 10, totalSteps: 10 }, s)), [10, 5, 0, 0]);
  assert.deepEqual([0, 3, 4].map((s) => alphaAt({ kind: 'constant', alpha: 5, offAfter: 4 }, s)), [5, 5, 0]);
  // As documented: the last of 10 updates runs at alpha / 10; 0 is reached just after it.
  assert.deepEqual(Array.from({ length: 11 }, (_, s) => alphaAt({ kind: 'linear', alpha: 5, totalSteps: 10 }, s)), [5, 4.5, 4, 3.5, 3, 2.5, 2, 1.5, 1, 0.5, 0]);
});

/** Trains `data` as whole batches and as two accumulated halves (rows 0-1, 2-3): same losses, same parameters. */
async function assertHalvesEqualWhole(step: ReturnType<typeof tinyStep>, forward: ReturnType<typeof tinyLm>, data: readonly TokenBatch[]) {
  const schedule = { kind: 'constant', lr: 0.5 } as const;
  const whole = await Trainer.create({ ort: cpu, step, initial: forward, schedule });
  const halves = await Trainer.create({ ort: cpu, step, initial: forward, schedule, gradientAccumulation: 2 });
  for (const b of data) {
    const a = await whole.trainStep(b);
    const h = await halves.trainStep([rowsOf(b, 0, 2), rowsOf(b, 2, 4)]);
    assert.ok(Math.abs(a.loss - h.loss) < 1e-5, `loss ${a.loss} vs ${h.loss}`);
  }
  const [pa, ph] = [await whole.parameters(), await halves.parameters()];
  let worst = 0;
  pa.forEach((t, i) => {
    const x = t.toArray() as Float32Array, y = ph[i]!.toArray() as Float32Array;
    x.forEach((v, j) => { worst = Math.max(worst, Math.abs(v - y[j]!)); });
  });
  assert.ok(worst < 1e-5, `worst parameter difference ${worst}`);
  await Promise.all([whole.release(), halves.release()]);
  return pa;
}

test('gradient accumulation with a per-position labels loss: micro-batches weighted by the positions it counts (position 0 too)', { timeout: 120_000 }, async () => {
  const forward = tinyLm();
  const step = tinyStep(forward, { optimizer: 'sgd', gradients: true, loss: 'labels:labels' });
  assert.equal(step.record.lossTargets, 'per-position');
  // Rows 0-1 keep only positions 0 and 1 in the loss, rows 2-3 all: the halves count 4 and 2L
  // positions, where a next-token count would give 2 and 2(L-1).
  const b = tokenBatch(4, 8);
  for (let r = 0; r < 2; r++) for (let j = 2; j < 8; j++) b.labels[r * 8 + j] = -100n;
  await assertHalvesEqualWhole(step, forward, [b]);
});

test('gradient accumulation: two half batches give the update of the whole batch (SGD)', { timeout: 120_000 }, async () => {
  const forward = tinyLm();
  const step = tinyStep(forward, { optimizer: 'sgd', gradients: true });
  const data = batches(3);
  const pa = await assertHalvesEqualWhole(step, forward, data);
  // And accumulation did something: one half alone moves the parameters elsewhere.
  const single = await Trainer.create({ ort: cpu, step, initial: forward, schedule: { kind: 'constant', lr: 0.5 } });
  for (const b of data) await single.trainStep(rowsOf(b, 0, 2));
  const ps = await single.parameters();
  assert.ok((ps[0]!.toArray() as Float32Array).some((v, j) => Math.abs(v - (pa[0]!.toArray() as Float32Array)[j]!) > 1e-4));
  await single.release();
});

test('resume: K steps, checkpoint, a new trainer (new session) to N equals N steps straight, bit for bit (NEFTune on)', { timeout: 120_000 }, async () => {
  const forward = tinyLm(true);
  const step = tinyStep(forward);
  const options = { ort: cpu, step, schedule: { kind: 'linear', lr: 0.01, warmupSteps: 2, totalSteps: 8 }, alpha: { kind: 'linear', alpha: 10, totalSteps: 8 }, seed: 11 } as const;
  const data = batches(8);
  const straight = await Trainer.create({ ...options, initial: forward });
  const want = await run(straight, data);
  const wantParams = await straight.parameters();
  await straight.release();

  const first = await Trainer.create({ ...options, initial: forward });
  const head = await run(first, data.slice(0, 3));
  const saved = await first.checkpoint({ batch: 3 });
  await first.release();
  const resumed = await Trainer.create({ ort: cpu, step, resume: saved });
  assert.deepEqual(resumed.dataPosition, { batch: 3 });
  assert.equal(resumed.stepCount, 3);
  const tail = await run(resumed, data, 3);
  assert.deepEqual([...head, ...tail].map((e) => e.loss), want.map((e) => e.loss));
  assert.deepEqual([...head, ...tail].map((e) => [e.lr, e.alpha]), want.map((e) => [e.lr, e.alpha]));
  const got = await resumed.parameters();
  got.forEach((t, i) => assert.ok(bits(t).equals(bits(wantParams[i]!)), `${t.name} is bit-identical`));
  await resumed.release();
  // The noise mattered: another seed gives other losses.
  const other = await Trainer.create({ ...options, seed: 12, initial: forward });
  const otherLosses = await run(other, data.slice(0, 3));
  assert.notDeepEqual(otherLosses.map((e) => e.loss), want.slice(0, 3).map((e) => e.loss));
  await other.release();
});

test('resume: a checkpoint that does not fit the step graph is a typed error naming each difference', { timeout: 60_000 }, async () => {
  const forward = tinyLm();
  const adam = await Trainer.create({ ort: cpu, step: tinyStep(forward), initial: forward, schedule: { kind: 'constant', lr: 0.01 } });
  const saved = await adam.checkpoint();
  await adam.release();
  const narrow = tinyStep(forward, { params: ['transformer.wte.weight'] });
  await assert.rejects(Trainer.create({ ort: cpu, step: narrow, resume: saved }), (e: unknown) =>
    e instanceof CheckpointMismatchError && e.code === 'BAD_OPTION' && e.problems.some((p) => /ln_f\.bias: in the checkpoint, not an input/.test(p)));
  await assert.rejects(Trainer.create({ ort: cpu, step: tinyStep(forward, { optimizer: 'sgd' }), resume: saved }), (e: unknown) =>
    e instanceof CheckpointMismatchError && /optimizer: the checkpoint is from adamw/.test(e.message));
  const wrongShape = { ...saved, tensors: saved.tensors.map((t) => (t.name === 'ln_f.bias' ? Object.assign(Object.create(Object.getPrototypeOf(t)), t, { proto: { ...t.proto, dims: [8], raw_data: t.rawBytes().slice(0, 32) } }) : t)) };
  await assert.rejects(Trainer.create({ ort: cpu, step: tinyStep(forward), resume: wrongShape }), /ln_f\.bias: shape \[8\] in the checkpoint, \[16\] in the step graph/);
  await assert.rejects(Trainer.create({ ort: cpu, step: tinyStep(forward), resume: saved, seed: 5 }), /seed differs from the checkpoint/);
});

/** The patched forward model with the keyed generator and outputs clean and noisy embeddings. */
async function keyedNoise(o: TrainerOrt, key: bigint, alpha = 5): Promise<Float32Array> {
  const m = tinyLm(true);
  assert.equal(keyPatchNoise(m), 1);
  for (const name of ['inputs_embeds', 'neftune__inputs_embeds__clean']) {
    const v = m.graph.value(name)!;
    const out = new Value(`${name}.out`);
    m.graph.append(new Node('Identity', [v], [out], { name: `${name}.copy` }));
    out.info = { name: out.name, type: tensorType(DataType.FLOAT, ['batch', 'sequence', 16]) };
    m.graph.addOutput(out);
  }
  const s = await o.InferenceSession.create(encodeModel(m));
  const b = tokenBatch(4, 32);
  const out = await s.run({
    input_ids: new o.Tensor('int64', b.inputIds, [4, 32]), neftune_alpha: new o.Tensor('float32', Float32Array.from([alpha]), []),
    [NOISE_KEY_INPUT]: new o.Tensor('uint64', BigUint64Array.from([key]), []),
  });
  await s.release();
  const noisy = out['inputs_embeds.out']!.data as Float32Array, clean = out['neftune__inputs_embeds__clean.out']!.data as Float32Array;
  return Float32Array.from(noisy, (v, i) => v - clean[i]!);
}

test('keyed NEFTune noise: U(-s, s) with s = alpha / sqrt(L d), fresh per key, the same in every session and on wasm', { timeout: 120_000 }, async () => {
  const s = 5 / Math.sqrt(32 * 16);
  const a = await keyedNoise(cpu, noiseKey(1, 0, 0));
  const check = checkUniformNoise(a, s, { tolerance: 1e-6 });
  assert.deepEqual(check.failures, [], JSON.stringify(check));
  const again = await keyedNoise(cpu, noiseKey(1, 0, 0));
  assert.ok(Buffer.from(again.buffer).equals(Buffer.from(a.buffer)), 'a new session draws the same noise for the same key');
  const next = await keyedNoise(cpu, noiseKey(1, 1, 0));
  assert.ok(next.some((v, i) => v !== a[i]), 'the next step draws other noise');
  const wasm = (await loadRuntime('wasm')).ort as unknown as TrainerOrt;
  const onWasm = await keyedNoise(wasm, noiseKey(1, 0, 0));
  let worst = 0;
  onWasm.forEach((v, i) => { worst = Math.max(worst, Math.abs(v - a[i]!)); });
  assert.ok(worst < 1e-6, `wasm draws the same noise (worst difference ${worst})`);
  assert.ok((await keyedNoise(cpu, noiseKey(1, 0, 0), 0)).every((v) => v === 0), 'alpha 0: no noise');
});

test('onnxruntime-web (wasm) in Node: the same run gives the same losses within float tolerance', { timeout: 180_000 }, async () => {
  const forward = tinyLm(true);
  const step = tinyStep(forward);
  const options = { step, initial: forward, schedule: { kind: 'constant', lr: 0.01 }, alpha: { kind: 'constant', alpha: 5 }, seed: 2 } as const;
  const data = batches(5);
  const wasm = await loadRuntime('wasm');
  const onCpu = await Trainer.create({ ...options, ort: cpu });
  const onWasm = await Trainer.create({ ...options, ort: wasm.ort as unknown as TrainerOrt, sessionOptions: wasm.sessionOptions });
  const a = await run(onCpu, data), b = await run(onWasm, data);
  a.forEach((e, i) => assert.ok(Math.abs(e.loss - b[i]!.loss) < 1e-4 * Math.max(1, Math.abs(e.loss)), `step ${i + 1}: cpu ${e.loss} vs wasm ${b[i]!.loss}`));
  await Promise.all([onCpu.release(), onWasm.release()]);
});

test('a batch longer than the position table: a typed error naming the update, the batch and ONNX Runtime\'s message', { timeout: 60_000 }, async () => {
  const forward = tinyLm();
  const trainer = await Trainer.create({ ort: cpu, step: tinyStep(forward), initial: forward, schedule: { kind: 'constant', lr: 0.01 } });
  await trainer.trainStep(tokenBatch(2, 8));
  await assert.rejects(trainer.trainStep(tokenBatch(2, 40)), (e: unknown) => {
    assert.ok(e instanceof TrainingRunError && e.code === 'BAD_OPTION', String(e));
    assert.deepEqual([e.update, ...e.batchShape], [2, 2, 40]);
    assert.match(e.message, /^Update 2 failed in ONNX Runtime on a batch of 2 rows x 40 tokens: .*idx=32 must be within .*\[-32,31\]\. /s);
    assert.match(e.message, /takes at most 32 \(Gather "wpe_lookup" reads position table "transformer.wpe.weight" of 32 rows\)/);
    return true;
  });
  await trainer.release();
});

test('maxSequenceLength: position tables, rotary caches and static input_ids dims bound it; forward and step graphs agree', () => {
  assert.equal(maxSequenceLength(buildTinyGpt({ maxPositions: 20 })), 20);
  assert.equal(maxSequenceLength(buildTinyGpt({ positionIdsInput: true })), 32);
  assert.equal(maxSequenceLength(tinyStep(buildTinyGpt({ maxPositions: 24 })).model), 24);
  assert.equal(maxSequenceLength(buildTinyGemma({ maxPositions: 16 })), 16, 'rotary cos cache rows');
  assert.equal(maxSequenceLength(buildTinyT5()), undefined, 'no position table');
  const fixed = buildTinyGpt();
  fixed.graph.inputs.find((v) => v.name === 'input_ids')!.info = { name: 'input_ids', type: tensorType(DataType.INT64, [1, 12]) };
  assert.deepEqual(sequenceLimit(fixed), { length: 12, reason: 'input "input_ids" has a static sequence dim 12' });
});
