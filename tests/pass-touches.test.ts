/**
 * inspect, patch and strip build only the nodes they need on a model decoded from bytes: one
 * lookup among 20,000 nodes. Counted through the lazy node storage's hook
 * `graph._builtNodeCount()`; skipped while the build has no lazy storage.
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { ModelBuilder, OnnxModelError, Tensor, decodeModel, encodeModel, type Graph, type Model } from '../src/graph/index.js';
import { applyNeftune, findEmbeddings, isPatched, looksLikeTrainingGraph, readPatchRecord, stripNeftune } from '../src/passes/index.js';
import { randomFloats } from '../examples/models.js';
import { sameBytes } from './helpers.js';

const NODES = 20_000;
/** The lookup, its table and indices, the patch's chain and what recognising it reads: far below the model's size. */
const FEW = 50;
const PATCH = { seed: 7 };

/** A token lookup in the middle of a long Relu chain that has nothing to do with it. */
function buildLongModel(options: { opsetImport: boolean }): Uint8Array {
  const b = new ModelBuilder({ opset: 17, irVersion: 8 });
  const ids = b.input('input_ids', 'int64', ['batch', 'sequence']);
  let x = b.input('features', 'float', ['batch', 8]);
  const table = b.initializer('wte', Tensor.fromArray('float', [64, 8], randomFloats(64 * 8, 1)));
  for (let i = 0; i < NODES / 2; i++) x = b.op('Relu', [x]);
  b.output(b.op('Gather', [table, ids], {}, { name: 'token_lookup', outputs: ['embeds'] }), 'float', ['batch', 'sequence', 8]);
  for (let i = 0; i < NODES / 2 - 1; i++) x = b.op('Relu', [x]);
  b.output(x, 'float', ['batch', 8]);
  const model = b.build();
  // Without a default-domain import the patch adds one, and strip checks that claim against the graph.
  if (!options.opsetImport) delete model.proto.opset_import;
  return encodeModel(model);
}

const source = buildLongModel({ opsetImport: true });

/** The hook's count, or undefined (with the test skipped) when node storage is eager. */
function builtCounter(t: TestContext, graph: Graph): (() => number) | undefined {
  const hook = (graph as unknown as { _builtNodeCount?: () => number })._builtNodeCount;
  if (typeof hook !== 'function') { t.skip('lazy node storage not in this build'); return undefined; }
  return () => hook.call(graph);
}

/** The same bytes decoded with every node built first: what the eager path gives. */
function walked(bytes: Uint8Array): Model {
  const model = decodeModel(bytes);
  for (const g of model.allGraphs()) assert.equal([...g].length, g.nodeCount);
  return model;
}

test('inspect (findEmbeddings, isPatched, the record) builds only the lookup and its neighbours', (t) => {
  const model = decodeModel(source);
  const built = builtCounter(t, model.graph);
  if (!built) return;
  assert.equal(model.graph.nodeCount, NODES);
  const report = findEmbeddings(model);
  assert.deepEqual(report.candidates.map((c) => [c.nodeLabel, c.role, c.patchable]), [['token_lookup', 'token', true]]);
  assert.equal(isPatched(model), false);
  assert.equal(readPatchRecord(model), undefined);
  assert.ok(built() < FEW, `inspect built ${built()} of ${NODES} nodes`);
  assert.deepEqual(report.nearMisses, findEmbeddings(walked(source)).nearMisses);
});

test('patch builds only the nodes it needs and writes the bytes the eager path writes', (t) => {
  const model = decodeModel(source);
  const built = builtCounter(t, model.graph);
  if (!built) return;
  const lazy = applyNeftune(model, PATCH);
  assert.ok(built() < FEW, `patch built ${built()} of ${NODES} nodes`);
  const eager = applyNeftune(walked(source), PATCH);
  assert.deepEqual(lazy.warnings, eager.warnings);
  assert.deepEqual(lazy.record, eager.record);
  assert.ok(sameBytes(encodeModel(lazy.model), encodeModel(eager.model)), 'the lazily patched model encodes as the eagerly patched one');
});

for (const opsetImport of [true, false]) {
  const original = opsetImport ? source : buildLongModel({ opsetImport });
  test(`strip builds only the patch and its site, and gives back the source bytes (${opsetImport ? 'with' : 'patch added'} the opset import)`, (t) => {
    const patched = encodeModel(applyNeftune(walked(original), PATCH).model);
    const model = decodeModel(patched);
    const built = builtCounter(t, model.graph);
    if (!built) return;
    const result = stripNeftune(model);
    assert.ok(built() < FEW, `strip built ${built()} of ${NODES} nodes`);
    assert.equal(result.modified, true);
    const eager = stripNeftune(walked(patched));
    assert.equal(result.message, eager.message);
    assert.ok(sameBytes(encodeModel(model), encodeModel(eager.model)), 'the lazily stripped model encodes as the eagerly stripped one');
    assert.ok(sameBytes(encodeModel(model), original), 'strip gives back the bytes before the patch');
  });
}

test('looksLikeTrainingGraph answers as a walk in list order would: a malformed ATenOp before a backward op throws, after it the answer is yes', () => {
  const build = (order: Array<'grad' | 'malformed'>): Model => {
    const b = new ModelBuilder({ opset: 17, irVersion: 8, opsets: { 'com.microsoft': 1 } });
    const x = b.input('x', 'float', [4]);
    for (const kind of order) {
      // ATenOp's `name` is a string (aten::...): an int makes reading it throw.
      const y = kind === 'grad' ? b.op('ReluGrad', [x, x], {}, { domain: 'com.microsoft' }) : b.op('ATenOp', [x], { name: 5 }, { domain: 'org.example' });
      b.output(y, 'float', [4]);
    }
    return b.build();
  };
  assert.equal(looksLikeTrainingGraph(build(['grad', 'malformed'])), true);
  assert.throws(() => looksLikeTrainingGraph(build(['malformed', 'grad'])), OnnxModelError);
  assert.throws(() => looksLikeTrainingGraph(build(['malformed'])), OnnxModelError);
});
