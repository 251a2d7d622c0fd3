/**
 * A sample of gradient rules on onnxruntime-web (wasm, in Node) in float32: the step graph's
 * gradients there equal those onnxruntime-node CPU computes (which the float64 rule tests hold
 * against finite differences), so the emitted ops run the same on the browser runtime.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { attr, encodeModel, type ModelBuilder, type Value } from '../../src/graph/index.js';
import { loadRuntime } from '../../src/runtime/node.js';
import { buildTrainingStep } from '../../src/training/step.js';
import { ints, ruleModel, session, stepFeeds, type Param } from './helpers.js';

const wasm = loadRuntime('wasm');

const sample: Array<[string, (b: ModelBuilder, p: Param) => Value, number?]> = [
  ['Gather (repeated and negative ids, ScatterND, opset 17)', (b, p) => b.op('Gather', [p('t', [6, 3]), ints(b, 'ids', [1, 4, 1, -1, 1, 0], [2, 3])], { axis: 0 })],
  ['Gather (repeated ids, one-hot MatMul, opset 13)', (b, p) => b.op('Gather', [p('t', [6, 3]), ints(b, 'ids', [1, 4, 1, 5, 1, 0], [2, 3])], { axis: 0 }), 13],
  ['MatMul ([2,3,4] @ [4,5], batch reduced)', (b, p) => b.op('MatMul', [p('a', [2, 3, 4]), p('w', [4, 5])])],
  ['Softmax (axis 1) and LogSoftmax (axis -1)', (b, p) => { const x = p('x', [2, 3, 4]); return b.op('Add', [b.op('Softmax', [x], { axis: 1 }), b.op('LogSoftmax', [x], { axis: -1 })]); }],
  ['LayerNormalization (axis -1)', (b, p) => b.op('LayerNormalization', [p('x', [2, 3, 4]), p('g', [4], { offset: 1 }), p('beta', [4])], { axis: -1, epsilon: attr.float(1e-5) })],
  ['Add/Mul broadcast and Div', (b, p) => b.op('Div', [b.op('Mul', [b.op('Add', [p('a', [2, 3, 4]), p('b', [4])]), p('c', [3, 1])]), p('d', [4], { offset: 2 })])],
  ['ReduceMean (axes [0, -1]) and Where', (b, p) => b.op('Where', [b.constant('cond', 'bool', [3], [1, 0, 1]), b.op('ReduceMean', [p('x', [2, 3, 4])], { axes: [0, -1], keepdims: 0 }), p('y', [3])])],
  ['Slice, Concat, Gelu (tanh, opset 20)', (b, p) => {
    const x = p('x', [4, 5]);
    const s = b.op('Slice', [x, ints(b, 'st', [1]), ints(b, 'en', [-1]), ints(b, 'ax', [-1])]);
    return b.op('Gelu', [b.op('Concat', [s, p('c', [4, 2])], { axis: -1 })], { approximate: 'tanh' });
  }, 20],
];

for (const [name, build, opset] of sample) {
  test(`wasm: rule ${name} gives the CPU gradients (float32)`, { timeout: 60_000 }, async () => {
    const m = ruleModel(build, { elem: 'float', ...(opset ? { opset } : {}) });
    const step = buildTrainingStep(m, { optimizer: 'sgd', gradients: true });
    const feeds = stepFeeds(m, step, 0);
    const cpu = await (await session(step.model)).run(feeds);
    const { ort, sessionOptions } = await wasm;
    const web = await ort.InferenceSession.create(encodeModel(step.model), sessionOptions);
    const webFeeds = Object.fromEntries(Object.entries(feeds).map(([k, t]) => [k, new ort.Tensor(t.type, t.data, t.dims)]));
    const out = await web.run(webFeeds);
    for (const p of step.record.params) {
      const want = cpu[p.grad!]!.data as Float32Array, got = out[p.grad!]!.data as Float32Array;
      assert.equal(got.length, want.length);
      assert.ok(want.some((x) => x !== 0), `${p.input}: the CPU gradient is not all zero`);
      want.forEach((w, i) => assert.ok(Math.abs(got[i]! - w) <= 1e-5 * (1 + Math.abs(w)), `${p.input}.grad[${i}]: wasm ${got[i]} vs cpu ${w}`));
    }
  });
}
