/**
 * Appended cross-entropy losses: `labels:NAME` (per position), `causal-lm:NAME` (next token, the
 * Hugging Face causal-LM convention with -100 for prompt and padding), and `causal-lm` (targets
 * from input_ids, attention_mask padding left out). Values against a JS computation from the step's
 * own logits, gradients against finite differences, an all-ignored batch, and paddingIdx.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { DataType, ModelBuilder, Tensor, type Model } from '../../src/graph/index.js';
import { buildTrainingStep, type LossChoice } from '../../src/training/step.js';
import { TrainingOptionError } from '../../src/training/errors.js';
import { finiteDifferenceError, ort, scalarOf, session, stepFeeds, values } from './helpers.js';

const B = 2, L = 4, V = 5, D = 3;

/** input_ids [batch, sequence] -> Gather(emb) -> MatMul(w) -> logits [batch, sequence, V], float64. */
function lmModel(options: { mask?: boolean; labels?: 'int64' | 'float' } = {}): Model {
  const b = new ModelBuilder({ opset: 17, irVersion: 8 });
  const ids = b.input('input_ids', 'int64', ['batch', 'sequence']);
  if (options.mask) b.input('attention_mask', 'int64', ['batch', 'sequence']);
  if (options.labels) b.input('labels', options.labels, ['batch', 'sequence']);
  const emb = b.initializer('emb', Tensor.fromArray('double', [V, D], Float64Array.from(values(V * D, 3))));
  const w = b.initializer('w', Tensor.fromArray('double', [D, V], Float64Array.from(values(D * V, 4), (x) => 2 * x)));
  const logits = b.op('MatMul', [b.op('Gather', [emb, ids], { axis: 0 }), w], {}, { outputs: ['logits'] });
  b.output(logits, 'double', ['batch', 'sequence', V]);
  return b.build();
}

const int64 = (v: number[]) => new ort.Tensor('int64', BigInt64Array.from(v.map(BigInt)), [B, L]);
const IDS = [1, 3, 0, 4, 2, 2, 1, 0];
/** Prompt masking: the first positions of each row and the padding are -100. */
const LABELS = [-100, -100, 0, 4, -100, 2, 1, -100];

/** Cross-entropy in JS: mean over counted (position, target) pairs of -log softmax(logits[pos])[target]. */
function expectedLoss(logits: Float64Array, targetAt: (b: number, l: number) => number | undefined): number {
  let total = 0, count = 0;
  for (let bi = 0; bi < B; bi++) {
    for (let li = 0; li < L; li++) {
      const t = targetAt(bi, li);
      if (t === undefined) continue;
      const row = Array.from(logits.subarray((bi * L + li) * V, (bi * L + li + 1) * V));
      const max = Math.max(...row);
      const lse = max + Math.log(row.reduce((s, x) => s + Math.exp(x - max), 0));
      total += lse - row[t]!;
      count++;
    }
  }
  return count ? total / count : 0;
}

async function runStep(m: Model, loss: LossChoice, feeds: Record<string, ort.Tensor>, extra: { ignoreIndex?: number } = {}) {
  const step = buildTrainingStep(m, { optimizer: 'sgd', gradients: true, loss, extraOutputs: ['logits'], ...extra });
  const out = await (await session(step.model)).run(stepFeeds(m, step, 0, feeds));
  return { step, out, loss: scalarOf(out[step.record.loss]!), logits: out['logits.out']!.data as Float64Array };
}

test('labels:labels: per-position cross-entropy, -100 left out, matches JS; the labels input is added as [batch, sequence] int64', async () => {
  const m = lmModel();
  const { step, loss, logits } = await runStep(m, 'labels:labels', { input_ids: int64(IDS), labels: int64(LABELS) });
  const added = step.model.graph.inputs.find((v) => v.name === 'labels')!;
  assert.equal(added.elemType, DataType.INT64);
  assert.deepEqual(added.shape, ['batch', 'sequence']);
  assert.equal(step.record.runtimeShapeFallbacks, 0, 'symbolic dims carried by name: no run-time axes');
  const expected = expectedLoss(logits, (bi, li) => (LABELS[bi * L + li]! === -100 ? undefined : LABELS[bi * L + li]!));
  assert.ok(Math.abs(loss - expected) < 1e-12, `${loss} vs ${expected}`);
});

test('causal-lm:labels: logits at i against labels at i + 1, -100 left out, matches JS (Hugging Face causal-LM loss)', async () => {
  const m = lmModel();
  const { loss, logits } = await runStep(m, 'causal-lm:labels', { input_ids: int64(IDS), labels: int64(LABELS) });
  const expected = expectedLoss(logits, (bi, li) => {
    if (li === L - 1) return undefined;
    const t = LABELS[bi * L + li + 1]!;
    return t === -100 ? undefined : t;
  });
  assert.ok(Math.abs(loss - expected) < 1e-12, `${loss} vs ${expected}`);
});

test('causal-lm: targets from input_ids, positions whose target is padding (attention_mask 0) left out, matches JS', async () => {
  const m = lmModel({ mask: true });
  const mask = [1, 1, 1, 1, 1, 1, 0, 0];
  const { loss, logits } = await runStep(m, 'causal-lm', { input_ids: int64(IDS), attention_mask: int64(mask) });
  const expected = expectedLoss(logits, (bi, li) => (li === L - 1 || !mask[bi * L + li + 1] ? undefined : IDS[bi * L + li + 1]!));
  assert.ok(Math.abs(loss - expected) < 1e-12, `${loss} vs ${expected}`);
});

test('ignoreIndex option: another label value is left out instead of -100', async () => {
  const m = lmModel();
  const labels = LABELS.map((x) => (x === -100 ? 3 : x));
  const { loss, logits } = await runStep(m, 'labels:labels', { input_ids: int64(IDS), labels: int64(labels) }, { ignoreIndex: 3 });
  const expected = expectedLoss(logits, (bi, li) => (labels[bi * L + li]! === 3 ? undefined : labels[bi * L + li]!));
  assert.ok(Math.abs(loss - expected) < 1e-12, `${loss} vs ${expected}`);
});

for (const loss of ['labels:labels', 'causal-lm:labels'] as const) {
  test(`${loss}: gradients match finite differences (float64)`, async () => {
    const m = lmModel();
    const step = buildTrainingStep(m, { optimizer: 'sgd', gradients: true, loss });
    const { worst, where, checked } = await finiteDifferenceError(m, step, { extra: { input_ids: int64(IDS), labels: int64(LABELS) } });
    assert.equal(checked, 2 * V * D);
    assert.ok(worst < 1e-6, `worst relative error ${worst} at ${where}`);
  });

  test(`${loss}: an all-ignored batch gives loss 0 and zero gradients, no NaN`, async () => {
    const m = lmModel();
    const { step, out, loss: value } = await runStep(m, loss, { input_ids: int64(IDS), labels: int64(new Array(B * L).fill(-100)) });
    assert.equal(value, 0);
    for (const p of step.record.params) {
      const g = Array.from(out[p.grad!]!.data as Float64Array);
      assert.ok(g.every((x) => x === 0), `${p.input}.grad is all zero: ${g}`);
      const updated = Array.from(out[p.output]!.data as Float64Array);
      assert.ok(updated.every(Number.isFinite));
    }
  });
}

test('a labels input the model already has is used as it is; a float one is refused', async () => {
  const m0 = lmModel();
  const step = buildTrainingStep(lmModel({ labels: 'int64' }), { optimizer: 'sgd', loss: 'labels:labels' });
  assert.equal(step.model.graph.inputs.filter((v) => v.name === 'labels').length, 1);
  assert.throws(() => buildTrainingStep(lmModel({ labels: 'float' }), { optimizer: 'sgd', loss: 'labels:labels' }), (e: unknown) => e instanceof TrainingOptionError && /"labels" must be int64.*it is FLOAT/.test(e.message));
  assert.throws(() => buildTrainingStep(m0, { optimizer: 'sgd', loss: 'labels:emb' }), /"emb" already names a value/);
  assert.throws(() => buildTrainingStep(m0, { optimizer: 'sgd', loss: 'labels:labels', ignoreIndex: 0.5 }), /ignoreIndex must be an integer/);
});

test('paddingIdx: the padding row gets no gradient from lookups (torch nn.Embedding(padding_idx)); other rows unchanged', async () => {
  const m = lmModel();
  const feeds = { input_ids: int64(IDS), labels: int64([0, 1, 2, 3, 4, 0, 1, 2]) };
  const plain = await runStep(m, 'labels:labels', feeds);
  const byName = buildTrainingStep(m, { optimizer: 'sgd', gradients: true, loss: 'labels:labels', paddingIdx: { emb: 2 } });
  const byDefault = buildTrainingStep(m, { optimizer: 'sgd', gradients: true, loss: 'labels:labels', paddingIdx: -3 });
  assert.deepEqual(byName.record.paddingRows, { emb: 2 });
  assert.deepEqual(byDefault.record.paddingRows, { emb: 2 }, 'one row: the token-embedding table; negative rows count from the end');
  const before = Array.from(plain.out['emb.grad']!.data as Float64Array);
  assert.ok(before.slice(2 * D, 3 * D).some((x) => x !== 0), 'row 2 is looked up (twice), so it has a gradient without paddingIdx');
  for (const step of [byName, byDefault]) {
    const out = await (await session(step.model)).run(stepFeeds(m, step, 0, feeds));
    const after = Array.from(out['emb.grad']!.data as Float64Array);
    after.forEach((x, i) => assert.equal(x, Math.floor(i / D) === 2 ? 0 : before[i], `emb.grad[${i}]`));
    assert.deepEqual(Array.from(out['w.grad']!.data as Float64Array), Array.from(plain.out['w.grad']!.data as Float64Array));
  }
  assert.throws(() => buildTrainingStep(m, { optimizer: 'sgd', loss: 'labels:labels', paddingIdx: { w: 0 } }), /no row lookup \(Gather on axis 0\)/);
  assert.throws(() => buildTrainingStep(m, { optimizer: 'sgd', loss: 'labels:labels', paddingIdx: { nope: 0 } }), (e: unknown) => e instanceof TrainingOptionError && /"nope", which is not a trained parameter/.test(e.message));
  assert.throws(() => buildTrainingStep(m, { optimizer: 'sgd', loss: 'labels:labels', paddingIdx: V }), /row 5 for "emb" is not a row of the table \(5 rows\)/);
});

test('paddingIdx on a tied table: only the lookup contribution of the row is dropped (opset 13, one-hot form)', async () => {
  // logits = Gather(t, ids) @ t^T: t is both the embedding and the output projection.
  const b = new ModelBuilder({ opset: 13, irVersion: 8 });
  const ids = b.input('input_ids', 'int64', ['batch', 'sequence']);
  const t = b.initializer('t', Tensor.fromArray('double', [V, D], Float64Array.from(values(V * D, 8))));
  const logits = b.op('MatMul', [b.op('Gather', [t, ids], { axis: 0 }), b.op('Transpose', [t], { perm: [1, 0] })], {}, { outputs: ['logits'] });
  b.output(logits, 'double', ['batch', 'sequence', V]);
  const m = b.build();
  const feeds = { input_ids: int64(IDS), labels: int64(LABELS) };
  const step = buildTrainingStep(m, { optimizer: 'sgd', gradients: true, loss: 'labels:labels', paddingIdx: { t: 1 } });
  assert.equal(step.record.gatherGradient, 'onehot-matmul');
  // Reference: the same model with the lookup reading a frozen copy of t gives the projection's share alone.
  const full = await (await session(step.model)).run(stepFeeds(m, step, 0, feeds));
  const plain = buildTrainingStep(m, { optimizer: 'sgd', gradients: true, loss: 'labels:labels' });
  const plainOut = await (await session(plain.model)).run(stepFeeds(m, plain, 0, feeds));
  const withPad = Array.from(full['t.grad']!.data as Float64Array), without = Array.from(plainOut['t.grad']!.data as Float64Array);
  for (let i = 0; i < V * D; i++) if (Math.floor(i / D) !== 1) assert.equal(withPad[i], without[i]);
  const row = withPad.slice(D, 2 * D), rowPlain = without.slice(D, 2 * D);
  assert.ok(row.some((x) => x !== 0), 'the projection still trains the padding row');
  assert.notDeepEqual(row, rowPlain, 'the lookup share is gone');
});

test('paddingIdx on a table read only by a Gather along another axis is refused, not ignored', () => {
  const b = new ModelBuilder({ opset: 17, irVersion: 8 });
  const cols = b.input('cols', 'int64', [2]);
  const table = b.initializer('table', Tensor.fromArray('double', [V, D], Float64Array.from(values(V * D, 5))));
  const picked = b.op('Gather', [table, cols], { axis: -1 });
  const loss = b.op('ReduceSum', [b.op('Mul', [picked, picked])], { keepdims: 0 }, { outputs: ['loss'] });
  b.output(loss, 'double', []);
  const m = b.build();
  assert.ok(buildTrainingStep(m, { optimizer: 'sgd' }), 'the step itself builds');
  assert.throws(() => buildTrainingStep(m, { optimizer: 'sgd', paddingIdx: { table: 1 } }),
    (e: unknown) => e instanceof TrainingOptionError && /"table", but no row lookup \(Gather on axis 0\)/.test(e.message));
});
