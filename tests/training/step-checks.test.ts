/**
 * What buildTrainingStep checks before it builds, and what it leaves out: the loss it takes for
 * logits, the order of refusals, which initializers it trains by default, how its messages name
 * options, and the nodes and inputs it prunes.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ModelBuilder, Tensor, encodeModel, type Model } from '../../src/graph/index.js';
import { applyNeftune } from '../../src/passes/index.js';
import { buildTinyGpt } from '../../examples/models.js';
import { buildTrainingStep } from '../../src/training/step.js';
import { TrainingOptionError, UnsupportedGradientError } from '../../src/training/errors.js';
import { inferShapes } from '../../src/training/shapes.js';
import { ints, ort, session, stepFeeds, values } from './helpers.js';

/** input_ids -> table[vocab, dim] lookup -> optional projection to `head` classes; outputs as asked. */
function lookupModel(o: { opset?: number; vocab?: number; dim?: number; head?: number; headName?: string; hidden?: boolean } = {}): Model {
  const { opset = 17, vocab = 16, dim = 8 } = o;
  const b = new ModelBuilder({ opset, irVersion: 8 });
  const ids = b.input('input_ids', 'int64', ['batch', 'seq']);
  const table = b.initializer('embed_weight', Tensor.fromArray('float', [vocab, dim], Float32Array.from(values(vocab * dim, 3))));
  const h = b.op('Gather', [table, ids], { axis: 0 });
  if (o.hidden !== false) b.output(h, 'float', ['batch', 'seq', dim]);
  if (o.head !== undefined) {
    const w = b.initializer('head.weight', Tensor.fromArray('float', [dim, o.head], Float32Array.from(values(dim * o.head, 5))));
    b.output(b.op('MatMul', [h, w], {}, { outputs: [o.headName ?? 'scores'] }), 'float', ['batch', 'seq', o.head]);
  }
  return b.build();
}

const refusal = (m: Model, options: Parameters<typeof buildTrainingStep>[1] = { optimizer: 'sgd' }): TrainingOptionError | UnsupportedGradientError => {
  try { buildTrainingStep(m, options); } catch (e) { if (e instanceof TrainingOptionError || e instanceof UnsupportedGradientError) return e; throw e; }
  assert.fail('built');
};

test('causal-LM logits: an embeddings output whose last dim is not the vocabulary size is refused, naming the candidates and the loss option', () => {
  const e = refusal(lookupModel());
  assert.match(e.message, /the token-embedding table has 16 rows; candidates: [^ ]+ \[batch, seq, 8\]/);
  assert.match(e.message, /Choose the loss with loss: "output:NAME"/);
  assert.match(e.describe((o) => `--${o}`), /Choose the loss with --loss: "output:NAME"/);
});

test('causal-LM logits: the one rank-3 output ending in the vocabulary size is taken, beside hidden states; "logits" by name wins', () => {
  const step = buildTrainingStep(lookupModel({ head: 16 }), { optimizer: 'sgd' });
  assert.deepEqual(step.record.params.map((p) => p.input), ['embed_weight', 'head.weight']);
  // Two outputs ending in 16: ambiguous unless one is called logits.
  const twoMatch = lookupModel({ dim: 16, head: 16 });
  assert.match(refusal(twoMatch).message, /several rank-3 outputs end in the vocabulary size 16/);
  const named = buildTrainingStep(lookupModel({ dim: 16, head: 16, headName: 'logits' }), { optimizer: 'sgd' });
  assert.ok(named.record.params.some((p) => p.input === 'head.weight'), 'the loss reads the head');
});

test('an unsupported opset is reported before any loss question', () => {
  // No input_ids and no scalar output: the loss could not be chosen either, but the opset is the first reason.
  const b = new ModelBuilder({ opset: 10, irVersion: 8 });
  const x = b.input('features', 'float', ['batch', 3]);
  b.output(b.op('MatMul', [x, b.initializer('w', Tensor.fromArray('float', [3, 4], Float32Array.from(values(12, 9))))]), 'float', ['batch', 4]);
  const e = refusal(b.build());
  assert.match(e.message, /opset 10; training steps need opset 11 or newer/);
});

test('default parameters leave single-element initializers (eps, scales) frozen and list them; params still trains them', async () => {
  const b = new ModelBuilder({ opset: 17, irVersion: 8 });
  const x = b.initializer('w', Tensor.fromArray('double', [2, 3], values(6, 1)));
  const eps = b.constant('eps', 'double', [], [1e-5]);
  const scale = b.constant('scale', 'double', [1], [0.5]);
  const y = b.op('Mul', [b.op('Add', [x, eps]), scale]);
  b.output(b.op('ReduceSum', [b.op('Mul', [y, y])], { keepdims: 0 }, { outputs: ['loss'] }), 'double', []);
  const m = b.build();
  const step = buildTrainingStep(m, { optimizer: 'sgd' });
  assert.deepEqual(step.record.params.map((p) => p.input), ['w']);
  assert.deepEqual(step.record.frozen, ['eps', 'scale']);
  const chosen = buildTrainingStep(m, { optimizer: 'sgd', params: ['w', 'scale'], gradients: true });
  assert.deepEqual(chosen.record.params.map((p) => p.input), ['w', 'scale']);
  assert.deepEqual(chosen.record.frozen, ['eps']);
  const out = await (await session(chosen.model)).run(stepFeeds(m, chosen, 0));
  // d/dscale sum((w + eps)^2 scale^2) = 2 scale sum((w + eps)^2)
  const expected = 2 * 0.5 * values(6, 1).reduce((p, v) => p + (v + 1e-5) ** 2, 0);
  assert.ok(Math.abs(Number((out['scale.grad']!.data as Float64Array)[0]) - expected) < 1e-9);
  // Only constants reach the loss: the message says how to train them.
  const c = new ModelBuilder({ opset: 17, irVersion: 8 });
  const k = c.constant('k', 'double', [], [2]);
  c.output(c.op('Mul', [k, k], {}, { outputs: ['loss'] }), 'double', []);
  const e = refusal(c.build());
  assert.match(e.message, /other than single-element constants \(k; name them in params to train them\)/);
  assert.match(e.describe((o) => `--${o}`), /name them in --params/);
});

test('library messages name options as options: the CLI can spell them as flags', () => {
  const m = lookupModel({ head: 16 });
  const unknown = refusal(m, { optimizer: 'sgd', params: ['nope'] });
  assert.equal(unknown.message, 'Parameter "nope" (params) is neither an initializer nor a graph input of the model.');
  assert.equal(unknown.describe((o) => `--${o}`), 'Parameter "nope" (--params) is neither an initializer nor a graph input of the model.');
  const b = new ModelBuilder({ opset: 17, irVersion: 8 });
  const x = b.initializer('x', Tensor.fromArray('double', [2, 3], values(6, 1)));
  b.output(b.op('ReduceSum', [b.op('Sin', [x], {}, { name: 'sine' })], { keepdims: 0 }, { outputs: ['loss'] }), 'double', []);
  const unsupported = refusal(b.build());
  assert.ok(unsupported instanceof UnsupportedGradientError);
  assert.match(unsupported.describe((o) => `--${o}`), /leave them out of --params/);
});

test('SoftmaxCrossEntropyLoss shape inference: both outputs, every reduction', () => {
  for (const reduction of ['mean', 'sum', 'none'] as const) {
    const b = new ModelBuilder({ opset: 13, irVersion: 8 });
    const scores = b.input('scores', 'float', ['n', 4, 'd']);
    const labels = b.input('labels', 'int64', ['n', 'd']);
    const [loss, logProb] = b.node('SoftmaxCrossEntropyLoss', [scores, labels], { reduction }, { outputCount: 2 });
    b.output(loss!, 'float', undefined);
    const m = b.build();
    const s = inferShapes(m.graph, 13);
    assert.deepEqual(s.dims(loss), reduction === 'none' ? ['n', 'd'] : [], reduction);
    assert.deepEqual(s.dims(logProb), ['n', 4, 'd']);
    assert.equal(s.isFloat(logProb), true);
  }
});

test('Slice to a run-time end read from Shape keeps the symbolic dim (optimum position ids)', () => {
  const b = new ModelBuilder({ opset: 11, irVersion: 7 });
  const ids = b.input('input_ids', 'int64', ['batch', 'sequence']);
  const buffer = b.constant('position_ids', 'int64', [1, 512], Array.from({ length: 512 }, (_, i) => i));
  const length = b.op('Unsqueeze', [b.op('Gather', [b.op('Shape', [ids]), ints(b, 'one', [1], [])], { axis: 0 })], { axes: [0] });
  const sliced = b.op('Slice', [buffer, ints(b, 'zero', [0]), length, ints(b, 'axis', [1])]);
  b.output(sliced, 'int64', undefined);
  const m = b.build();
  assert.deepEqual(inferShapes(m.graph, 11).dims(sliced), [1, 'sequence']);
});

test('labels:NAME on logits [batch, classes] takes labels [batch] (sequence classification); a labels input of the wrong rank is refused', async () => {
  const b = new ModelBuilder({ opset: 13, irVersion: 8 });
  const x = b.input('features', 'float', ['batch', 3]);
  const w = b.initializer('w', Tensor.fromArray('float', [3, 4], Float32Array.from(values(12, 9))));
  b.output(b.op('MatMul', [x, w], {}, { outputs: ['logits'] }), 'float', ['batch', 4]);
  const m = b.build();
  const step = buildTrainingStep(m, { optimizer: 'sgd', loss: 'labels:labels', gradients: true });
  assert.deepEqual(step.model.graph.inputs.find((v) => v.name === 'labels')!.shape, ['batch']);
  const feeds = stepFeeds(m, step, 0, {
    features: new ort.Tensor('float32', Float32Array.from(values(6, 2)), [2, 3]),
    labels: new ort.Tensor('int64', BigInt64Array.from([3n, -100n]), [2]),
  });
  const out = await (await session(step.model)).run(feeds);
  // Only the first row counts: loss = -log softmax(x0 @ w)[3].
  const row = [0, 1, 2, 3].map((j) => [0, 1, 2].reduce((p, i) => p + Math.fround(values(6, 2)[i]!) * Math.fround(values(12, 9)[i * 4 + j]!), 0));
  const lse = Math.log(row.reduce((p, v) => p + Math.exp(v), 0));
  assert.ok(Math.abs(Number((out[step.record.loss]!.data as Float32Array)[0]) - (lse - row[3]!)) < 1e-5);
  const wrong = new ModelBuilder({ opset: 13, irVersion: 8 });
  const f = wrong.input('features', 'float', ['batch', 3]);
  wrong.input('labels', 'int64', ['batch', 'seq']);
  wrong.output(wrong.op('MatMul', [f, wrong.initializer('w', Tensor.fromArray('float', [3, 4], Float32Array.from(values(12, 9))))], {}, { outputs: ['logits'] }), 'float', ['batch', 4]);
  assert.match(refusal(wrong.build(), { optimizer: 'sgd', loss: 'labels:labels' }).message, /must be int64 \(or int32\) of shape \[batch\] \(logits logits are \[batch, 4\]\); it is INT64 of rank 2/);
});

test('nodes no step output needs are pruned; a forward input nothing reads any more is dropped and listed', async () => {
  const b = new ModelBuilder({ opset: 17, irVersion: 8 });
  const ids = b.input('input_ids', 'int64', ['batch', 'seq']);
  const extra = b.input('extra', 'float', ['batch', 2]);
  const table = b.initializer('embed_weight', Tensor.fromArray('float', [16, 16], Float32Array.from(values(256, 3))));
  b.output(b.op('Gather', [table, ids], { axis: 0 }, { outputs: ['logits'] }), 'float', ['batch', 'seq', 16]);
  // A side output from another input: not needed by the loss, so its nodes and input go.
  b.output(b.op('Relu', [b.op('Neg', [extra], {}, { name: 'side_neg' })], {}, { name: 'side_relu' }), 'float', ['batch', 2]);
  const m = b.build();
  const step = buildTrainingStep(m, { optimizer: 'sgd' });
  assert.ok(!step.model.graph.nodes.some((n) => n.name === 'side_neg' || n.name === 'side_relu'));
  assert.deepEqual(step.record.droppedInputs, ['extra']);
  assert.deepEqual(step.record.inputs, ['input_ids']);
  const out = await (await session(step.model)).run(stepFeeds(m, step, 0.1, { input_ids: new ort.Tensor('int64', BigInt64Array.from([1n, 2n, 3n, 4n, 5n, 6n]), [2, 3]) }));
  assert.ok(Number.isFinite(Number((out[step.record.loss]!.data as Float32Array)[0])));
});

test('buildTrainingStep works on a clone: the source model encodes to the same bytes afterwards (float32, float16, NEFTune-patched)', () => {
  for (const source of [buildTinyGpt({ vocab: 64 }), buildTinyGpt({ vocab: 64, dtype: 'float16' }), applyNeftune(buildTinyGpt({ vocab: 64 }), { alphaInput: true, seed: 1 }).model]) {
    const before = encodeModel(source);
    buildTrainingStep(source, { optimizer: 'adamw', loss: 'causal-lm', paddingIdx: 0, gradients: true });
    assert.deepEqual(encodeModel(source), before);
  }
});
