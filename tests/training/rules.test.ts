/**
 * Every gradient rule against central finite differences, in float64 graphs on ONNX Runtime CPU:
 * loss = ReduceSum(y * y) over the op's output y, parameters are float64 initializers.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ModelBuilder, Tensor, attr, DataType, type Value } from '../../src/graph/index.js';
import { buildTrainingStep } from '../../src/training/step.js';
import { UnsupportedGradientError } from '../../src/training/errors.js';
import { finiteDifferenceError, ints, ort, ruleModel, session, stepFeeds, values, type Param } from './helpers.js';

const cases: Array<[string, (b: ModelBuilder, p: Param) => Value, number?]> = [
  ['Add (broadcast [2,3,4] + [4] + [3,1])', (b, p) => b.op('Add', [b.op('Add', [p('a', [2, 3, 4]), p('b', [4])]), p('c', [3, 1])])],
  ['Sub (broadcast [2,3] - [1,3])', (b, p) => b.op('Sub', [p('a', [2, 3]), p('b', [1, 3])])],
  ['Mul (broadcast, shared operand x*x*w)', (b, p) => { const x = p('x', [2, 3]); return b.op('Mul', [b.op('Mul', [x, x]), p('w', [3])]); }],
  ['Div (broadcast [2,3] / [3])', (b, p) => b.op('Div', [p('a', [2, 3]), p('b', [3], { offset: 2 })])],
  ['Neg', (b, p) => b.op('Neg', [p('x', [5])])],
  ['Sqrt', (b, p) => b.op('Sqrt', [p('x', [5], { offset: 2 })])],
  ['Reciprocal', (b, p) => b.op('Reciprocal', [p('x', [5], { offset: 2 })])],
  ['Exp', (b, p) => b.op('Exp', [p('x', [5])])],
  ['Log', (b, p) => b.op('Log', [p('x', [5], { offset: 2 })])],
  ['Tanh', (b, p) => b.op('Tanh', [p('x', [5])])],
  ['Sigmoid', (b, p) => b.op('Sigmoid', [p('x', [5])])],
  ['Relu', (b, p) => b.op('Relu', [p('x', [7])])],
  ['Pow (constant exponents 3 and 2.5)', (b, p) => b.op('Add', [b.op('Pow', [p('x', [4]), b.constant('e3', 'double', [], [3])]), b.op('Pow', [p('z', [4], { offset: 2 }), b.constant('e25', 'double', [], [2.5])])])],
  ['MatMul ([2,3,4] @ [4,5], batch reduced)', (b, p) => b.op('MatMul', [p('a', [2, 3, 4]), p('w', [4, 5])])],
  ['MatMul ([3,4] @ [2,4,5])', (b, p) => b.op('MatMul', [p('a', [3, 4]), p('w', [2, 4, 5])])],
  ['Gemm (transA, transB, alpha, beta, C [5])', (b, p) => b.op('Gemm', [p('a', [4, 3]), p('w', [5, 4]), p('c', [5])], { transA: 1, transB: 1, alpha: attr.float(0.7), beta: attr.float(1.3) })],
  ['Gemm (plain, C [3,1])', (b, p) => b.op('Gemm', [p('a', [3, 4]), p('w', [4, 5]), p('c', [3, 1])])],
  ['Gather axis 0, repeated and negative ids (ScatterND, opset 17)', (b, p) => b.op('Gather', [p('t', [6, 3]), ints(b, 'ids', [1, 4, 1, -1, 1, 0], [2, 3])], { axis: 0 })],
  ['Gather axis 0, repeated ids (one-hot MatMul, opset 13)', (b, p) => b.op('Gather', [p('t', [6, 3]), ints(b, 'ids', [1, 4, 1, 5, 1, 0], [2, 3])], { axis: 0 }), 13],
  ['Gather of a rank-3 table (one-hot, opset 14)', (b, p) => b.op('Gather', [p('t', [5, 2, 3]), ints(b, 'ids', [4, 4, 0], [3])], { axis: 0 }), 14],
  ['Gather axis 1, scalar index (hidden[:, 0]), and axis -1 with repeated ids (ScatterND, opset 17)', (b, p) => {
    const x = p('x', [2, 4, 3]);
    const first = b.op('Gather', [x, ints(b, 'zero', [0], [])], { axis: 1 });
    return b.op('Add', [first, b.op('ReduceSum', [b.op('Gather', [x, ints(b, 'cols', [2, -1, 0], [3])], { axis: -1 }), ints(b, 'ax', [1])], { keepdims: 0 })]);
  }],
  ['Gather axis 1 (one-hot MatMul, opset 11), ids [3] and a scalar id', (b, p) => {
    const x = p('x', [2, 4, 3]);
    return b.op('Add', [b.op('Gather', [x, ints(b, 'rows', [3, 1, 3], [3])], { axis: 1 }), b.op('Unsqueeze', [b.op('Gather', [x, ints(b, 'row', [2], [])], { axis: 1 })], { axes: [1] })]);
  }, 11],
  ['Softmax (axis -1) and Softmax (axis 1)', (b, p) => { const x = p('x', [2, 3, 4]); return b.op('Add', [b.op('Softmax', [x], { axis: -1 }), b.op('Softmax', [x], { axis: 1 })]); }],
  ['LogSoftmax (axis -1)', (b, p) => b.op('LogSoftmax', [p('x', [2, 5])], { axis: -1 })],
  ['ReduceMean (axes attr [-1], keepdims 0)', (b, p) => b.op('ReduceMean', [p('x', [2, 3, 4])], { axes: [-1], keepdims: 0 })],
  ['ReduceMean (axes input, opset 18)', (b, p) => b.op('ReduceMean', [p('x', [2, 3, 4]), ints(b, 'axes', [0, -1])], { keepdims: 1 }), 18],
  ['ReduceSum (axes input [1], keepdims 1) and all axes', (b, p) => { const x = p('x', [2, 3, 4]); return b.op('Add', [b.op('ReduceSum', [x, ints(b, 'axes', [1])], { keepdims: 1 }), b.op('ReduceSum', [x], { keepdims: 1 })]); }],
  ['Reshape, Unsqueeze, Squeeze, Flatten, Transpose', (b, p) => {
    const x = b.op('Reshape', [p('x', [2, 3, 4]), ints(b, 's', [3, -1])]);
    const u = b.op('Unsqueeze', [x, ints(b, 'u', [0, -1])]);
    const t = b.op('Transpose', [u], { perm: [3, 2, 0, 1] });
    const sq = b.op('Squeeze', [t, ints(b, 'q', [0])]);
    return b.op('Flatten', [sq], { axis: 1 });
  }],
  ['Transpose (default perm)', (b, p) => b.op('MatMul', [b.op('Transpose', [p('x', [2, 3, 4])]), p('w', [2, 3])])],
  ['Concat (axis -1)', (b, p) => b.op('Concat', [p('a', [2, 3]), p('b', [2, 1]), p('c', [2, 2])], { axis: -1 })],
  ['Slice (negative start/end, two axes) and open end', (b, p) => {
    const x = p('x', [4, 5, 3]);
    const s1 = b.op('Slice', [x, ints(b, 'st', [-3, 1]), ints(b, 'en', [-1, 9]), ints(b, 'ax', [0, -2])]);
    return b.op('Mul', [s1, b.op('Slice', [x, ints(b, 'st2', [0, 0]), ints(b, 'en2', [2, -1]), ints(b, 'ax2', [0, 1])])]);
  }],
  ['Split (sizes input; one output unused)', (b, p) => {
    const [s0, , s2] = b.node('Split', [p('x', [2, 7]), ints(b, 'sizes', [2, 3, 2])], { axis: -1 }, { outputCount: 3 });
    return b.op('Mul', [s0!, s2!]);
  }],
  ['Expand ([3,1] to [2,3,4])', (b, p) => b.op('Expand', [p('x', [3, 1]), ints(b, 'shape', [2, 3, 4])])],
  ['Where (bool condition, broadcast branch)', (b, p) => b.op('Where', [b.constant('cond', 'bool', [2, 3], [1, 0, 0, 1, 1, 0]), p('a', [2, 3]), p('c', [3])])],
  ['Identity, Cast (double to double), Dropout (inference), Constant', (b, p) => {
    const x = b.op('Cast', [b.op('Identity', [p('x', [4])])], { to: DataType.DOUBLE });
    const d = b.op('Dropout', [x, b.constant('ratio', 'double', [], [0.3]), b.constant('train', 'bool', [], [0])]);
    return b.op('Add', [d, b.op('Constant', [], { value: Tensor.fromArray('double', [4], [1, 2, 3, 4]) })]);
  }],
  ['LayerNormalization (axis -1, scale and bias)', (b, p) => b.op('LayerNormalization', [p('x', [2, 3, 4]), p('g', [4], { offset: 1 }), p('beta', [4])], { axis: -1, epsilon: attr.float(1e-5) })],
  ['LayerNormalization (axis 1 over [3,4])', (b, p) => b.op('LayerNormalization', [p('x', [2, 3, 4]), p('g', [3, 4], { offset: 1 })], { axis: 1 })],
  ['Gelu (approximate tanh, opset 20)', (b, p) => b.op('Gelu', [p('x', [2, 5], { scale: 3 })], { approximate: 'tanh' }), 20],
  ['RMSNormalization (axis -1, opset 23)', (b, p) => b.op('RMSNormalization', [p('x', [2, 3, 4]), p('g', [4], { offset: 1 })], { axis: -1, epsilon: attr.float(1e-5) }), 23],
  ['RMSNormalization (axis -2 over [3,4], scale [1,4] broadcast, opset 23)', (b, p) => b.op('RMSNormalization', [p('x', [2, 3, 4]), p('g', [1, 4], { offset: 1 })], { axis: -2 }), 23],
  ['RMS norm as torch exports it (Llama: Pow 2, ReduceMean, Add eps, Sqrt, Reciprocal, Mul weight)', (b, p) => rmsPattern(b, p, 'llama')],
  ['RMS norm as torch exports it (Gemma: Div by Sqrt, weight (1 + w))', (b, p) => rmsPattern(b, p, 'gemma')],
  ['Split (equal parts, no sizes, opset 13)', (b, p) => {
    const [s0, s1] = b.node('Split', [p('x', [2, 6])], { axis: 1 }, { outputCount: 2 });
    return b.op('Mul', [s0!, b.op('Exp', [s1!])]);
  }, 13],
  ['Split (num_outputs 3 over 7: parts 3, 3, 1; axis -1; opset 18)', (b, p) => {
    const [s0, s1, s2] = b.node('Split', [p('x', [2, 7])], { axis: -1, num_outputs: 3 }, { outputCount: 3 });
    return b.op('Concat', [b.op('Mul', [s0!, s1!]), b.op('Exp', [s2!])], { axis: -1 });
  }, 18],
  ['Max (three inputs, broadcast) and Min (broadcast)', (b, p) => {
    const a = p('a', [2, 3]), c = p('c', [3]), d = p('d', [2, 1]);
    return b.op('Add', [b.op('Max', [a, c, d]), b.op('Min', [a, c])]);
  }],
  ['Max(x, x) and Min(x, x): a tie splits the gradient', (b, p) => { const x = p('x', [4]); return b.op('Add', [b.op('Max', [x, x]), b.op('Min', [x, x])]); }],
  ['ConstantOfShape(Shape(x)) and Constant: no gradient through them', (b, p) => {
    const x = p('x', [2, 3]);
    const k = b.op('ConstantOfShape', [b.op('Shape', [x])], { value: Tensor.fromArray('double', [1], [2.5]) });
    return b.op('Add', [b.op('Mul', [x, k]), b.op('Constant', [], { value: Tensor.fromArray('double', [3], [1, 2, 3]) })]);
  }],
];

function rmsPattern(b: ModelBuilder, p: Param, style: 'llama' | 'gemma'): Value {
  const x = p('x', [2, 3, 4]), w = p('w', [4], { scale: 0.5, offset: style === 'llama' ? 1 : 0 });
  const variance = b.op('ReduceMean', [b.op('Pow', [x, b.constant('two', 'double', [], [2])])], { axes: [-1], keepdims: 1 });
  const rms = b.op('Sqrt', [b.op('Add', [variance, b.constant('eps', 'double', [], [1e-6])])]);
  if (style === 'llama') return b.op('Mul', [w, b.op('Mul', [x, b.op('Reciprocal', [rms])])]);
  return b.op('Mul', [b.op('Div', [x, rms]), b.op('Add', [b.constant('one', 'double', [], [1]), w])]);
}

for (const [name, build, opset] of cases) {
  test(`rule ${name}: gradients match finite differences (float64, CPU)`, { timeout: 30_000 }, async () => {
    const m = ruleModel(build, opset === undefined ? {} : { opset });
    const step = buildTrainingStep(m, { optimizer: 'sgd', gradients: true });
    assert.ok(step.record.params.length >= 1);
    assert.equal(step.record.runtimeShapeFallbacks, 0, 'static shapes need no run-time fallback');
    const { worst, where, checked } = await finiteDifferenceError(m, step);
    assert.ok(checked >= step.record.params.length);
    assert.ok(worst < 1e-6, `worst relative error ${worst} at ${where}`);
  });
}

test('rule Erf: gradients match finite differences (float32: ORT has no float64 Erf)', async () => {
  const b = new ModelBuilder({ opset: 17, irVersion: 8 });
  const x = b.initializer('x', Tensor.fromArray('float', [6], Float32Array.from(values(6, 5))));
  const y = b.op('Erf', [x]);
  b.output(b.op('ReduceSum', [b.op('Mul', [y, y])], { keepdims: 0 }, { outputs: ['loss'] }), 'float', []);
  const m = b.build();
  const step = buildTrainingStep(m, { optimizer: 'sgd', gradients: true });
  const out = await (await session(step.model)).run(stepFeeds(m, step, 0));
  const grad = out['x.grad']!.data as Float32Array;
  const xs = Float32Array.from(values(6, 5));
  xs.forEach((v, i) => {
    const expected = 2 * erf(v) * (2 / Math.sqrt(Math.PI)) * Math.exp(-v * v);
    assert.ok(Math.abs(grad[i]! - expected) < 1e-5, `x[${i}]: ${grad[i]} vs ${expected}`);
  });
});

for (const approximate of ['none', 'tanh']) {
  test(`rule Gelu (approximate ${approximate}, opset 20): gradients match finite differences (float32: ORT has no float64 Erf)`, async () => {
    const m = ruleModel((b, p) => b.op('Gelu', [p('x', [3, 4], { scale: 3 })], { approximate }), { opset: 20, elem: 'float' });
    const step = buildTrainingStep(m, { optimizer: 'sgd', gradients: true });
    const { worst, where, checked } = await finiteDifferenceError(m, step, { h: 5e-3 });
    assert.equal(checked, 12);
    assert.ok(worst < 2e-3, `worst relative error ${worst} at ${where}`);
  });
}

function erf(x: number): number {
  // Abramowitz-Stegun 7.1.26 is too coarse; sum the series instead (|x| < 1 here).
  let sum = 0, term = x;
  for (let n = 0; n < 40; n++) { sum += term / (2 * n + 1); term *= (-x * x) / (n + 1); }
  return (2 / Math.sqrt(Math.PI)) * sum;
}

test('rule Cast: a float32 parameter read through Cast to float64 gets a float32 gradient', async () => {
  const b = new ModelBuilder({ opset: 17, irVersion: 8 });
  const x = b.initializer('x', Tensor.fromArray('float', [3], [0.5, -1.25, 2]));
  const y = b.op('Cast', [x], { to: DataType.DOUBLE });
  b.output(b.op('ReduceSum', [b.op('Mul', [y, y])], { keepdims: 0 }, { outputs: ['loss'] }), 'double', []);
  const m = b.build();
  const step = buildTrainingStep(m, { optimizer: 'sgd', gradients: true });
  const out = await (await session(step.model)).run(stepFeeds(m, step, 0));
  assert.equal(out['x.grad']!.type, 'float32');
  assert.deepEqual(Array.from(out['x.grad']!.data as Float32Array), [1, -2.5, 4]);
});

test('rule Dropout (training): gradient is g * mask / (1 - ratio), read against the mask the step outputs', async () => {
  const b = new ModelBuilder({ opset: 17, irVersion: 8 });
  const x = b.initializer('x', Tensor.fromArray('double', [64], Float64Array.from(values(64, 9))));
  const [d] = b.node('Dropout', [x, b.constant('ratio', 'double', [], [0.25]), b.constant('train', 'bool', [], [1])], { seed: attr.int(7) }, { outputs: ['dropped'] });
  const w = b.constant('w', 'double', [64], Float64Array.from(values(64, 10)));
  b.output(b.op('ReduceSum', [b.op('Mul', [d!, w])], { keepdims: 0 }, { outputs: ['loss'] }), 'double', []);
  const m = b.build();
  const step = buildTrainingStep(m, { optimizer: 'sgd', gradients: true, extraOutputs: ['dropped'] });
  const out = await (await session(step.model)).run(stepFeeds(m, step, 0));
  const grad = out['x.grad']!.data as Float64Array;
  const dropped = out['dropped.out']!.data as Float64Array;
  const ws = values(64, 10), xs = values(64, 9);
  let zeros = 0;
  for (let i = 0; i < 64; i++) {
    const kept = dropped[i] !== 0 || xs[i] === 0;
    if (!kept) zeros++;
    const expected = kept ? ws[i]! / 0.75 : 0;
    assert.ok(Math.abs(grad[i]! - expected) < 1e-12, `x[${i}]: ${grad[i]} vs ${expected}`);
  }
  assert.ok(zeros > 0 && zeros < 64, 'the mask dropped some elements and kept others');
});

test('ops without a rule on a parameter path are listed together, before anything is built', () => {
  const b = new ModelBuilder({ opset: 17, irVersion: 8 });
  const x = b.initializer('x', Tensor.fromArray('double', [2, 3], values(6, 1)));
  const frozen = b.initializer('frozen', Tensor.fromArray('double', [2, 3], values(6, 2)));
  const a = b.op('Sin', [x], {}, { name: 'sine' });
  // Downstream of Sin (whose shape is unknown): a consequence of it, not listed.
  const g = b.op('MatMul', [a, b.constant('w', 'double', [3, 1], [1, 2, 3])], {}, { name: 'after_sine' });
  // Its own operands are known: a cause of its own.
  const vec = b.op('MatMul', [x, b.constant('v', 'double', [3], [1, 2, 3])], {}, { name: 'matvec' });
  const off = b.op('Cos', [frozen], {}, { name: 'cos_off_path' });
  const y = b.op('Add', [b.op('Add', [b.op('Mul', [g, b.constant('k', 'double', [2, 1], [1, 2])]), b.op('Unsqueeze', [vec, ints(b, 'u1', [1])])]), b.op('ReduceSum', [off, ints(b, 'ax', [1])], { keepdims: 1 })]);
  b.output(b.op('ReduceSum', [y], { keepdims: 0 }, { outputs: ['loss'] }), 'double', []);
  const m = b.build();
  const before = m.graph.nodeCount;
  assert.throws(() => buildTrainingStep(m, { optimizer: 'sgd', params: ['x'] }), (err: unknown) => {
    assert.ok(err instanceof UnsupportedGradientError);
    assert.equal(err.code, 'BAD_OPTION');
    assert.deepEqual(err.ops.map((o) => `${o.op} ${o.node}`), ['Sin sine', 'MatMul matvec']);
    assert.match(err.message, /Sin "sine" \(no gradient rule\); MatMul "matvec" \(an operand is 1-D/);
    return true;
  });
  assert.equal(m.graph.nodeCount, before, 'the source model is untouched');
  // The default parameter set also meets them (frozen's Cos is on a path too).
  assert.throws(() => buildTrainingStep(m, { optimizer: 'sgd' }), /Cos "cos_off_path"/);
});

test('a parameter path through a non-differentiable branch (Shape, RandomUniformLike) needs no rule', async () => {
  const b = new ModelBuilder({ opset: 17, irVersion: 8 });
  const x = b.initializer('x', Tensor.fromArray('double', [2, 3], values(6, 4)));
  const noise = b.op('RandomUniformLike', [x], { low: attr.float(-1), high: attr.float(1) });
  const count = b.op('Cast', [b.op('ReduceProd', [b.op('Shape', [x])], { keepdims: 0 })], { to: DataType.DOUBLE });
  const y = b.op('Add', [x, b.op('Mul', [b.op('Mul', [noise, count]), b.constant('zero', 'double', [], [0])])]);
  b.output(b.op('ReduceSum', [b.op('Mul', [y, y])], { keepdims: 0 }, { outputs: ['loss'] }), 'double', []);
  const m = b.build();
  const step = buildTrainingStep(m, { optimizer: 'sgd', gradients: true });
  const out = await (await session(step.model)).run(stepFeeds(m, step, 0));
  assert.deepEqual(Array.from(out['x.grad']!.data as Float64Array), values(6, 4).map((v) => 2 * v));
});

void ort;
