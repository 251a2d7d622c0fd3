import { test } from 'node:test';
import assert from 'node:assert/strict';
import { DataType, Node, Tensor, Value, attr, decodeModel, encodeModel, makeAttribute, type Model } from '../src/graph/index.js';
import { applyNeftune, type NeftuneOptions } from '../src/passes/index.js';
import { verifyNeftune, type VerifyReport } from '../src/verify/index.js';
import { loadRuntime, type Runtime } from '../src/runtime/node.js';
import { buildTinyBert, buildTinyGemma, buildTinyGpt, buildTinyT5, buildTinyTrainingGraph, randomFloats } from '../examples/models.js';
import { fixtureNames, patchIfPossible, readFixture, skipWithoutFixtures } from './helpers.js';

const runtimes: Record<string, Promise<Runtime>> = { cpu: loadRuntime('cpu'), wasm: loadRuntime('wasm') };
const verify = async (model: Model, ep = 'cpu', extra: Partial<Parameters<typeof verifyNeftune>[1]> = {}): Promise<VerifyReport> => {
  const rt = await runtimes[ep]!;
  return verifyNeftune(model, { ort: rt.ort, ep, sessionOptions: rt.sessionOptions, ...extra });
};
const patched = (model: Model, options: NeftuneOptions) => { applyNeftune(model, options); return model; };
const failing = (r: VerifyReport) => r.sites.flatMap((s) => s.checks.filter((c) => !c.ok).map((c) => c.name));

const shapes: Array<[string, (dtype: 'float' | 'float16' | 'bfloat16') => Model, NeftuneOptions]> = [
  ['gpt hf', (dtype) => buildTinyGpt({ dtype }), { alphaInput: true }],
  ['gpt packed', (dtype) => buildTinyGpt({ dtype, positionIdsInput: true }), { mode: 'packed', alphaInput: true, seed: 5 }],
  ['bert mask', (dtype) => buildTinyBert({ dtype }), { mode: 'mask', alphaInput: true }],
  ['t5 hf (shared table)', (dtype) => buildTinyT5({ dtype }), { alpha: 10 }],
  ['gemma after-scale', (dtype) => buildTinyGemma({ dtype }), { afterScale: true, alphaInput: 'alpha' }],
];

for (const ep of ['cpu', 'wasm']) {
  for (const dtype of ['float', 'float16', 'bfloat16'] as const) {
    test(`verify passes on ${ep} for builder models in ${dtype}: every mode`, async () => {
      for (const [label, build, options] of shapes) {
        const report = await verify(patched(build(dtype), options), ep);
        assert.ok(report.ok, `${label}: ${report.message}`);
        assert.equal(report.ran, 'whole');
        assert.equal(report.ep, ep);
        assert.match(report.ortVersion, /^1\.\d+/);
        const names = new Set(report.sites.flatMap((s) => s.checks.map((c) => c.name)));
        assert.ok(names.has('noise') && names.has('fresh') && names.has('strip'), label);
        if (options.alphaInput) assert.ok(names.has('alpha-zero'), label);
        if (options.mode === 'mask') assert.ok(report.sites[0]!.stats!.zeroCount > 0, `${label}: padding was checked`);
      }
    });
  }
}

test('a training graph ONNX Runtime cannot run whole is verified through the slice', async () => {
  const model = buildTinyTrainingGraph();
  // A training-only contrib op (as in ORT training artifacts) makes the whole graph unloadable.
  model.addOpsetImport('com.microsoft', 1);
  const grad = model.graph.value('embedding.weight_grad')!;
  const acc = new Value('embedding.weight_grad.accumulation.out');
  const buffer = new Value('embedding.weight_grad.accumulation.buffer');
  buffer.info = { name: buffer.name, type: { tensor_type: { elem_type: DataType.FLOAT, shape: { dim: [{ dim_value: 32 }, { dim_value: 16 }] } } } };
  model.graph.addInput(buffer);
  model.graph.append(new Node('InPlaceAccumulatorV2', [buffer, grad], [acc, new Value('updated')], { domain: 'com.microsoft', name: 'accumulate' }));
  acc.info = { name: acc.name, type: { tensor_type: { elem_type: DataType.FLOAT } } };
  model.graph.addOutput(acc);
  const report = await verify(patched(model, { alphaInput: true }));
  assert.ok(report.ok, report.message);
  assert.equal(report.ran, 'slice');
  assert.match(report.sliceReason!, /cannot run the whole model/);
});

test('verify on an unpatched model lists the candidates and says nothing is patched', async () => {
  const report = await verify(buildTinyBert());
  assert.equal(report.ok, false);
  assert.equal(report.patched, false);
  assert.match(report.message, /Nothing is patched/);
  assert.equal(report.candidates.length, 3);
});

test('verify passes for every fixture that patches (CPU and wasm)', { skip: skipWithoutFixtures }, async () => {
  let verified = 0;
  for (const name of fixtureNames()) {
    const model = decodeModel(readFixture(name));
    if (!patchIfPossible(model)) continue;
    const missingData = name.includes('extdata');
    for (const ep of ['cpu', 'wasm']) {
      const report = await verify(model, ep, missingData ? { unavailable: () => true } : {});
      assert.ok(report.ok, `${name} on ${ep}: ${report.message}`);
    }
    verified++;
  }
  assert.equal(verified, 15);
});

// ---- Deliberately wrong patches: verify must catch each one.

function nodeNamed(model: Model, suffix: string): Node {
  for (const g of model.allGraphs()) for (const n of g) if (n.name?.startsWith('neftune__') && n.name.endsWith(suffix)) return n;
  throw new Error(`no patch node ending in ${suffix}`);
}

/** Replaces `node` by a Constant writing the same value. */
function replaceWithConstant(node: Node, tensor: Tensor): void {
  const out = node.output(0);
  const graph = node.graph!;
  const constant = new Node('Constant', [], [], { name: `${node.name}_wrong`, attributes: [makeAttribute('value', attr.tensor(tensor))] });
  graph.insertBefore(node, constant);
  graph.remove(node, { force: true });
  constant.appendOutput(out);
}

test('wrong scale (vocab * d instead of L * d) is caught', async () => {
  const model = patched(buildTinyGpt({ vocab: 64, dim: 16 }), {});
  replaceWithConstant(nodeNamed(model, '__L_times_d'), Tensor.fromArray('float', [], [64 * 16]));
  const report = await verify(model);
  assert.equal(report.ok, false);
  // The chain is no longer the one the patch emits, so strip refuses it too.
  assert.deepEqual(failing(report), ['noise', 'strip']);
  assert.match(report.message, /wrong spread/);
});

test('one-sided noise U[0, 1) is caught', async () => {
  const model = patched(buildTinyGpt(), {});
  const uniform = nodeNamed(model, '__uniform');
  uniform.attribute('low')!.proto.f = 0;
  const report = await verify(model);
  assert.equal(report.ok, false);
  assert.ok(failing(report).includes('noise'));
  assert.match(report.message, /not zero-mean/);
});

test('noise on padding in mask mode is caught', async () => {
  const model = patched(buildTinyBert(), { mode: 'mask' });
  const tokenScale = nodeNamed(model, '__token_scale');
  const one = new Node('Constant', [], [new Value('neftune__test_one')], { name: 'neftune__test_one', attributes: [makeAttribute('value', attr.tensor(Tensor.fromArray('float', [], [1])))] });
  tokenScale.graph!.insertBefore(tokenScale, one);
  tokenScale.replaceInput(0, one.output(0)); // drops "times mask": padding now gets noise
  const report = await verify(model);
  assert.equal(report.ok, false);
  assert.match(report.message, /padding element\(s\) carry noise/);
});

test('the same noise replayed every run is caught', async () => {
  const model = patched(buildTinyGpt(), {});
  const [batch, seq, dim] = [2, 16, 16];
  replaceWithConstant(nodeNamed(model, '__uniform'), Tensor.fromArray('float', [batch, seq, dim], Float32Array.from(randomFloats(batch * seq * dim, 99, 1))));
  const report = await verify(model, 'cpu', { batch, seq });
  assert.equal(report.ok, false);
  assert.deepEqual(failing(report), ['fresh', 'strip']);
  assert.match(report.message, /replayed/);
});

test('encodeModel of a verified model is unchanged by verification', async () => {
  const model = patched(buildTinyGpt(), { alphaInput: true });
  const before = encodeModel(model);
  await verify(model);
  assert.deepEqual(encodeModel(model), before);
});
