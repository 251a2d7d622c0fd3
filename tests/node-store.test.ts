/**
 * The node store (src/graph/node-store.ts): a decoded main graph keeps its nodes as bytes and builds
 * Node objects when reached. Whatever is built, and in whatever order, the graph must answer and
 * encode exactly as a graph decoded wholly into objects (protobufjs, no node bytes) does.
 */
import assert from 'node:assert/strict';
import test from 'node:test';
import {
  GraphEditError, Node, Value, decodeModel, decodeModelProto, encodeModel, modelFromProto, type Graph, type Model,
} from '../src/graph/index.js';
import { buildBertBase } from '../bench/models.js';
import { buildTinyGpt } from '../examples/models.js';
import { fixtureNames, readFixture, sameBytes, skipWithoutFixtures } from './helpers.js';

const built = (g: Graph): number => (g as unknown as { _builtNodeCount(): number })._builtNodeCount();
const stored = (g: Graph): boolean => (g as unknown as { _store?: unknown })._store !== undefined;
/** The same model decoded wholly into objects: protobufjs reads every node, no store. */
const eager = (bytes: Uint8Array): Model => modelFromProto(decodeModelProto(bytes));

/** Everything the graph API says about the main graph's nodes and values, as plain data. */
function describe(model: Model): unknown {
  const g = model.graph;
  const nodes = [...g];
  const index = new Map(nodes.map((n, i) => [n, i]));
  const values = new Set<Value>();
  for (const n of nodes) for (const v of [...n.inputs, ...n.outputs]) if (v) values.add(v);
  for (const v of [...g.inputs, ...g.outputs, ...g.initializers]) values.add(v);
  return {
    nodes: nodes.map((n) => [n.opType, n.domain, n.name, n.inputs.map((v) => v?.name ?? null), n.outputs.map((v) => v?.name ?? null), n.attributes.map((a) => a.name)]),
    values: [...values].map((v) => [v.name, v.producer ? index.get(v.producer) : null, v.producerIndex, v.uses.map((u) => [index.get(u.node) ?? 'outside', u.index])]),
    scope: [...g.scope.keys()].sort(),
  };
}

const gpt = () => encodeModel(buildTinyGpt());
const bert = () => encodeModel(buildBertBase({ layers: 2, dim: 32, heads: 2, vocab: 64 }));

test('a decoded graph keeps its nodes as bytes until they are reached, and reads like an eager decode', () => {
  for (const bytes of [gpt(), bert()]) {
    const model = decodeModel(bytes);
    assert.ok(stored(model.graph), 'the main graph of a plain model is stored');
    assert.equal(built(model.graph), 0, 'decoding builds no node');
    assert.equal(model.graph.nodeCount, eager(bytes).graph.nodeCount);
    assert.deepEqual(describe(model), describe(eager(bytes)));
    assert.ok(!stored(model.graph), 'walking the list builds every node and lets the store go');
  }
});

test('partly built graphs answer as eager ones: producers, uses in node order, lookups, findNodes, opTypeCounts', () => {
  const bytes = bert();
  const model = decodeModel(bytes);
  const reference = eager(bytes);
  const g = model.graph;
  // Reach a few nodes from different sides first, so some uses are counted before the rest.
  const lookup = g.findNodes({ opType: 'Gather' })[0]!;
  const expectedGathers = reference.graph.nodes.filter((n) => n.opType === 'Gather').map((n) => n.name);
  assert.deepEqual(g.findNodes({ opType: 'Gather' }).map((n) => n.name), expectedGathers);
  assert.ok(built(g) < g.nodeCount / 4, `findNodes built ${built(g)} of ${g.nodeCount}`);
  const consumer = lookup.output(0).uses[0]!.node;
  void consumer.output(0).producer;
  const table = lookup.input(0)!;
  assert.equal(table.uses.length, reference.graph.value(table.name)!.uses.length);
  assert.deepEqual(g.opTypeCounts(), reference.graph.opTypeCounts());
  assert.equal(g.value('no such name'), undefined);
  assert.equal(g.lookup(lookup.output(0).name), lookup.output(0));
  assert.deepEqual(describe(model), describe(reference));
});

test('edits on a partly built graph encode exactly as the same edits on an eager one', () => {
  const bytes = gpt();
  const edit = (m: Model) => {
    const g = m.graph;
    const lookup = g.findNodes({ opType: 'Gather' }).find((n) => n.input(0)?.initializer)!;
    const id = Node.create('Identity', [lookup.output(0)], ['tok_id'], { name: 'id' });
    g.insertAfter(lookup, id);
    lookup.output(0).replaceAllUsesWith(id.output(0), { except: [id] });
    // A stored value renamed: its producer and every reader must write the new name.
    const next = id.output(0).uses[0]!.node;
    next.output(0).name = 'renamed_by_test';
    // And a removal: the readers go back to the lookup, then the Identity goes.
    id.output(0).replaceAllUsesWith(lookup.output(0));
    g.remove(g.findNodes({ opType: 'Identity' }).find((n) => n.name === 'id')!);
  };
  const lazy = decodeModel(bytes);
  edit(lazy);
  assert.ok(stored(lazy.graph), 'the edit left most nodes stored');
  const reference = eager(bytes);
  edit(reference);
  assert.ok(sameBytes(encodeModel(lazy), encodeModel(reference)), 'same bytes as the eager graph after the same edits');
  assert.ok(!sameBytes(encodeModel(lazy), bytes), 'the edit changed something');
  const again = decodeModel(encodeModel(lazy));
  assert.equal(again.graph.value('renamed_by_test')!.uses.length, reference.graph.value('renamed_by_test')!.uses.length);
  assert.ok(again.graph.value('renamed_by_test')!.producer);
});

test('names written by stored nodes are taken: inserting or renaming onto one is refused, and nothing changes', () => {
  const bytes = gpt();
  const model = decodeModel(bytes);
  const g = model.graph;
  const reference = eager(bytes);
  // An intermediate value: not declared anywhere, so only the store knows the name is taken.
  const nodes = reference.graph.nodes;
  const taken = nodes[nodes.length >> 1]!.output(0).name;
  assert.ok(!reference.graph.outputs.some((o) => o.name === taken));
  const input = g.inputs[0]!;
  assert.throws(() => g.append(Node.create('Identity', [input], [taken])), GraphEditError);
  assert.throws(() => { input.name = taken; }, GraphEditError);
  assert.equal(input.name, reference.graph.inputs[0]!.name);
  assert.ok(sameBytes(encodeModel(model), bytes), 'refused edits leave the bytes as they were');
});

test('an unedited stored graph encodes to its bytes without building a node', () => {
  const bytes = bert();
  const model = decodeModel(bytes);
  assert.ok(sameBytes(encodeModel(model), bytes));
  assert.equal(built(model.graph), 0);
  const copy = model.clone();
  assert.ok(sameBytes(encodeModel(copy), bytes), 'a clone of a stored graph encodes to the same bytes');
});

test('graphs the store does not hold decode as before: subgraphs, a name written twice, names that are not UTF-8', () => {
  // A name written twice: the first definition wins, as in the eager decoder.
  const proto = decodeModelProto(gpt());
  const nodes = proto.graph!.node!;
  nodes[1]!.output = [nodes[0]!.output![0]!];
  for (const bytes of [encodeModel(modelFromProto(proto))]) {
    const model = decodeModel(bytes);
    assert.ok(!stored(model.graph));
    assert.deepEqual(describe(model), describe(eager(bytes)));
  }
  // A node input whose bytes are not UTF-8: protobufjs reads it lossily; the store leaves it to protobufjs.
  const good = gpt();
  const name = new TextEncoder().encode(decodeModelProto(good).graph!.node![0]!.input![0]!);
  const at = good.findIndex((_, i) => name.every((b, j) => good[i + j] === b) && good[i - 2] === 0x0a);
  assert.ok(at > 0);
  const bad = good.slice();
  bad[at] = 0xff;
  const decoded = decodeModel(bad);
  assert.ok(!stored(decoded.graph));
  assert.deepEqual(describe(decoded), describe(eager(bad)));
});

test('third-party fixtures: lazy and eager decodes agree, and an unedited model encodes to its bytes', { skip: skipWithoutFixtures }, () => {
  let storedGraphs = 0;
  for (const name of fixtureNames()) {
    const bytes = readFixture(name);
    let model: Model;
    try { model = decodeModel(bytes); } catch { continue; } // refused inputs are covered by the bad-input tests
    if (stored(model.graph)) storedGraphs++;
    assert.ok(sameBytes(encodeModel(model), encodeModel(eager(bytes))), `${name}: same encoding as the eager decode`);
    assert.deepEqual(describe(model), describe(eager(bytes)), name);
  }
  assert.ok(storedGraphs > 10, `only ${storedGraphs} fixtures were held in the store`);
});

test('clone of a partly built graph: nothing more is built in either, the copy reads and edits like the original', () => {
  const bytes = bert();
  const model = decodeModel(bytes);
  const lookup = model.graph.findNodes({ opType: 'Gather' })[0]!;
  const wordTable = lookup.input(0)!;
  void wordTable.uses; // completed before the clone
  const before = built(model.graph);
  const copy = model.clone();
  assert.equal(built(model.graph), before, 'cloning builds nothing in the original');
  assert.ok(stored(copy.graph) && built(copy.graph) === before, 'the copy keeps the same nodes unbuilt');
  assert.ok(sameBytes(encodeModel(copy), bytes));
  // An edit on the copy reaches stored nodes of the copy only.
  const copyLookup = copy.graph.findNodes({ opType: 'Gather' })[0]!;
  copyLookup.output(0).name = 'renamed_in_copy';
  assert.equal(model.graph.value('renamed_in_copy'), undefined);
  assert.ok(sameBytes(encodeModel(model), bytes), 'the original is untouched');
  const reference = eager(bytes);
  reference.graph.findNodes({ opType: 'Gather' })[0]!.output(0).name = 'renamed_in_copy';
  assert.ok(sameBytes(encodeModel(copy), encodeModel(reference)));
  assert.deepEqual(describe(copy), describe(reference));
  assert.deepEqual(describe(model), describe(eager(bytes)));
});
