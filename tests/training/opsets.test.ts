/**
 * Step graphs in the model's own opset: at 11-12 axes are attributes (ReduceSum, Squeeze,
 * Unsqueeze, Split) and (Log)Softmax normalizes the input coerced to 2-D; the Gather gradient is
 * ScatterND add from opset 16 and the one-hot MatMul form below it, never a raised opset. ORT
 * checks every node against the imported opset's schema when it loads the step, so a wrong form fails.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { ModelBuilder, Value } from '../../src/graph/index.js';
import { buildTrainingStep } from '../../src/training/step.js';
import { TrainingOptionError, UnsupportedGradientError } from '../../src/training/errors.js';
import { finiteDifferenceError, ints, ort, ruleModel, values, type Param } from './helpers.js';

/** Reduce, (Un)Squeeze, Split, Softmax axis 1 and default-axis LogSoftmax of a rank-3 value, and a repeated-id Gather. */
function mixed(opset: number) {
  return (b: ModelBuilder, p: Param): Value => {
    const attrAxes = opset < 13;
    const axesArg = (name: string, axes: number[]) => (attrAxes ? [] : [ints(b, name, axes)]);
    const axesAttr = (axes: number[]): Record<string, number[]> => (attrAxes ? { axes } : {});
    const x = p('x', [2, 3, 4]);
    const summed = b.op('ReduceSum', [x, ...axesArg('rs', [-1])], { keepdims: 0, ...axesAttr([-1]) });
    const un = b.op('Unsqueeze', [summed, ...axesArg('us', [0])], axesAttr([0]));
    const sq = b.op('Squeeze', [un, ...axesArg('sq', [0])], axesAttr([0]));
    const [s0, s1] = b.node('Split', [sq, ...(attrAxes ? [] : [ints(b, 'sizes', [1, 2])])], { axis: -1, ...(attrAxes ? { split: [1, 2] } : {}) }, { outputCount: 2 });
    const soft = b.op('Softmax', [x], { axis: 1 });
    const logSoft = b.op('LogSoftmax', [b.op('Mul', [x, p('k', [4])])]);
    const rows = b.op('Gather', [p('t', [5, 4]), ints(b, 'ids', [1, 3, 1, -1, 1, 0], [2, 3])], { axis: 0 });
    const tail = b.op('Add', [b.op('Add', [soft, logSoft]), rows]);
    return b.op('Concat', [b.op('Mul', [s0!, s1!]), b.op('Reshape', [tail, ints(b, 'flat', [2, -1])])], { axis: 1 });
  };
}

for (const [opset, form] of [[11, 'onehot-matmul'], [12, 'onehot-matmul'], [13, 'onehot-matmul'], [16, 'scatternd-add'], [17, 'scatternd-add']] as const) {
  test(`opset ${opset}: the step keeps opset ${opset}, runs on ORT, gradients match finite differences; Gather gradient ${form}`, { timeout: 60_000 }, async () => {
    const m = ruleModel(mixed(opset), { opset });
    const step = buildTrainingStep(m, { optimizer: 'adamw', gradients: true });
    assert.equal(step.model.opsetVersion(''), opset, 'the opset is never raised');
    assert.equal(step.record.gatherGradient, form);
    assert.equal(step.record.runtimeShapeFallbacks, 0);
    const ops = new Set([...step.model.graph].map((n) => n.opType));
    assert.equal(ops.has('ScatterND'), form === 'scatternd-add');
    assert.equal(ops.has('OneHot'), form === 'onehot-matmul');
    const { worst, where } = await finiteDifferenceError(m, step);
    assert.ok(worst < 1e-6, `worst relative error ${worst} at ${where}`);
  });
}

test('a model without Gather on a path records gatherGradient "none"', () => {
  const step = buildTrainingStep(ruleModel((b, p) => b.op('Tanh', [p('x', [3])]), { opset: 11 }), { optimizer: 'sgd' });
  assert.equal(step.record.gatherGradient, 'none');
});

test('opset 10 is refused with a typed error naming the minimum', () => {
  const m = ruleModel((b, p) => b.op('Tanh', [p('x', [3])]), { opset: 10 });
  assert.throws(() => buildTrainingStep(m, { optimizer: 'sgd' }), (e: unknown) => e instanceof TrainingOptionError && e.code === 'BAD_OPTION' && /opset 10; training steps need opset 11 or newer/.test(e.message));
});

/** w [1, 3] * u [n, m] + v [p, q]: which axes of w * u the gradient reduces is only known at run time. */
const runtimeBroadcast = (b: ModelBuilder, p: Param): Value => b.op('Add', [b.op('Mul', [p('w', [1, 3]), b.input('u', 'double', ['n', 'm'])]), b.input('v', 'double', ['p', 'q'])]);

test('run-time broadcast axes: counted as a fallback at opset 13 (and right), a typed error at opset 12', async () => {
  const m = ruleModel(runtimeBroadcast, { opset: 13 });
  const step = buildTrainingStep(m, { optimizer: 'sgd', gradients: true });
  assert.equal(step.record.runtimeShapeFallbacks, 1);
  const feed = (seed: number) => new ort.Tensor('float64', Float64Array.from(values(6, seed)), [2, 3]);
  const { worst, where } = await finiteDifferenceError(m, step, { extra: { u: feed(21), v: feed(22) } });
  assert.ok(worst < 1e-6, `worst relative error ${worst} at ${where}`);
  assert.throws(() => buildTrainingStep(ruleModel(runtimeBroadcast, { opset: 12 }), { optimizer: 'sgd' }), (e: unknown) => e instanceof UnsupportedGradientError && /run-time axes from opset 13 on \(the model imports opset 12\)/.test(e.message));
});
