/**
 * Edge cases of the node store (src/graph/node-store.ts, Graph's stored segments in ir.ts): a graph
 * decoded lazily must answer, edit and encode exactly as the same bytes decoded eagerly
 * (protobufjs, no store), whatever is built first and in whatever order things are edited; and
 * hostile node bodies must fail with the same OnnxDecodeError as the full structure check.
 */
import assert from 'node:assert/strict';
import test from 'node:test';
import {
  Graph, Node, OnnxDecodeError, Tensor, Value, decodeModel, decodeModelProto, encodeModel, encodeModelProto,
  modelFromProto, topologicalSort, DataType, type Model, type ModelProto, type NodeProto,
} from '../src/graph/index.js';
import { checkWireStructure } from '../src/graph/wire.js';
import { ModelProtoType } from '../src/graph/proto.js';
import { encodeVarint } from '../src/graph/varint.js';
import { sameBytes, firstDifference } from './helpers.js';

const storeOf = (g: Graph): unknown => (g as unknown as { _store?: unknown })._store;
const eager = (bytes: Uint8Array): Model => modelFromProto(decodeModelProto(bytes));

// ---------------------------------------------------------------- models as protos

/** [op, inputs, outputs, name]: every node named, so uses can be told apart by name. */
type Spec = [string, string[], string[], string];
interface GraphSpec {
  inputs?: string[];
  initializers?: string[];
  outputs?: string[];
  valueInfo?: string[];
  training?: Spec[];
}
const info = (name: string) => ({ name, type: { tensor_type: { elem_type: DataType.FLOAT, shape: { dim: [{ dim_value: 2 }] } } } });
const node = ([op, input, output, name]: Spec): NodeProto => ({ op_type: op, input, output, name });

function modelProto(nodes: Spec[], spec: GraphSpec = {}): ModelProto {
  const proto: ModelProto = {
    ir_version: 9,
    opset_import: [{ domain: '', version: 17 }],
    graph: {
      name: 'main',
      node: nodes.map(node),
      input: (spec.inputs ?? ['x']).map(info),
      initializer: (spec.initializers ?? []).map((name) => ({ name, dims: [2], data_type: DataType.FLOAT, float_data: [1, 2] })),
      output: (spec.outputs ?? []).map(info),
      value_info: (spec.valueInfo ?? []).map(info),
    },
  };
  if (spec.training) proto.training_info = [{ algorithm: { name: 'step', node: spec.training.map(node) } }];
  return proto;
}
const bytesOf = (nodes: Spec[], spec: GraphSpec = {}): Uint8Array => encodeModelProto(modelProto(nodes, spec));

// ---------------------------------------------------------------- snapshots

const nodeLabel = (n: Node): string => n.name ?? `<${n.opType}>`;
const usesOf = (v: Value | undefined | null) => v?.uses.map((u) => `${nodeLabel(u.node)}#${u.index}`);

/** Everything observable about the main graph, as plain data (walks the list, so it builds everything). */
function snapshot(model: Model): unknown {
  const g = model.graph;
  const nodes = [...g];
  const values = new Set<Value>();
  for (const v of [...g.inputs, ...g.initializers]) values.add(v);
  for (const n of nodes) for (const v of [...n.inputs, ...n.outputs]) if (v) values.add(v);
  for (const v of [...g.outputs, ...g.valueInfo]) values.add(v);
  return {
    nodes: nodes.map((n) => [n.opType, n.name, n.inputs.map((v) => v?.name ?? null), n.outputs.map((v) => v?.name ?? null)]),
    values: [...values].map((v) => [v.name, v.producer ? nodeLabel(v.producer) : null, v.producerIndex, usesOf(v), v.graph === g]),
    scope: [...g.scope.keys()].sort(),
    lists: [g.inputs, g.outputs, g.initializers, g.valueInfo].map((l) => l.map((v) => v.name)),
    counts: [...g.opTypeCounts()].sort(),
    training: model.trainingInfo.map((t) => t.algorithm && [...t.algorithm].map((n) => [nodeLabel(n), n.inputs.map((v) => [v?.name, v?.graph === g])])),
  };
}

/**
 * Runs `edit` on a lazy decode and on an eager decode of `bytes`, and requires the same results
 * (what `edit` returns, thrown errors) and the same graph and bytes after. Returns the lazy model.
 */
function sameAsEager(bytes: Uint8Array, edit: (m: Model) => unknown, options: { stored?: boolean } = {}): Model {
  const lazy = decodeModel(bytes);
  if (options.stored !== false) assert.ok(storeOf(lazy.graph), 'the lazy decode keeps its nodes stored');
  const reference = eager(bytes);
  assert.equal(storeOf(reference.graph), undefined);
  const run = (m: Model) => { try { return { result: edit(m) }; } catch (error) { return { error: String(error) }; } };
  assert.deepEqual(run(lazy), run(reference), 'the edit answers the same');
  const lazyBytes = encodeModel(lazy), eagerBytes = encodeModel(reference);
  assert.ok(sameBytes(lazyBytes, eagerBytes), `same bytes after the edit (first difference at ${firstDifference(lazyBytes, eagerBytes)})`);
  assert.deepEqual(snapshot(lazy), snapshot(reference));
  return lazy;
}

/** A chain x -> a -> b -> c -> d with side readers, for edits next to stored runs. */
const chain: Spec[] = [
  ['Relu', ['x'], ['a'], 'A'],
  ['Neg', ['a'], ['b'], 'B'],
  ['Add', ['a', 'b'], ['c'], 'C'],
  ['Mul', ['c', 'a'], ['d'], 'D'],
  ['Sigmoid', ['d'], ['e'], 'E'],
  ['Add', ['e', 'a'], ['f'], 'F'],
];
const chainBytes = () => bytesOf(chain, { outputs: ['f'] });

// ---------------------------------------------------------------- uses and producers

const readTwice = () => bytesOf([['Relu', ['x'], ['a'], 'A'], ['Mul', ['a', 'a'], ['m'], 'M'], ['Add', ['m', 'a'], ['s'], 'S']], { outputs: ['s'] });

test('a node reading one value twice, built before its value\'s uses are asked for: one use per slot', () => {
  sameAsEager(readTwice(), (m) => { const mul = m.graph.findNodes({ opType: 'Mul' })[0]!; return [usesOf(mul.input(0)), mul.input(0)!.useCount]; });
  sameAsEager(readTwice(), (m) => usesOf(m.graph.inputs[0]));
});

test('a node reading one value twice, built by completing that value\'s uses: one use per slot', () => {
  // The value first: completing its uses builds M, which reads it twice.
  sameAsEager(readTwice(), (m) => usesOf(m.graph.value('a')));
  sameAsEager(bytesOf([['Mul', ['x', 'x'], ['m'], 'M']], { outputs: ['m'] }), (m) => usesOf(m.graph.inputs[0]));
  // What the stale use breaks: after rewiring every reader away, the producer still counts as read.
  sameAsEager(readTwice(), (m) => {
    const g = m.graph;
    const a = g.value('a')!;
    a.replaceAllUsesWith(g.inputs[0]!);
    g.remove(a.producer!);
    return usesOf(a);
  });
});

test('a node reading its own output, and a graph out of order', () => {
  const bytes = bytesOf([['Add', ['x', 'loop'], ['loop'], 'L'], ['Relu', ['late'], ['y'], 'Y'], ['Neg', ['loop'], ['late'], 'N']], { outputs: ['y'] });
  sameAsEager(bytes, (m) => [m.graph.value('loop')!.producer?.name, usesOf(m.graph.value('loop'))]);
  sameAsEager(bytes, (m) => { const y = m.graph.findNodes({ opType: 'Relu' })[0]!; return [y.input(0)!.producer?.name, usesOf(y.input(0))]; });
  // topologicalSort of a partly built unsorted graph (the self loop is not a dependency).
  sameAsEager(bytes, (m) => { void m.graph.value('late')!.producer; topologicalSort(m.graph); return m.graph.nodes.map(nodeLabel); });
});

test('replaceInput / replaceAllUsesWith on built nodes whose values still have stored readers keep use order', () => {
  sameAsEager(chainBytes(), (m) => {
    const g = m.graph;
    const d = g.findNodes({ opType: 'Mul' })[0]!;
    d.replaceInput(1, g.value('b')!); // a loses a use, b gains one: both still partly stored
    return [usesOf(g.value('a')), usesOf(g.value('b'))];
  });
  sameAsEager(chainBytes(), (m) => {
    const g = m.graph;
    const c = g.findNodes({ opType: 'Add' })[0]!;
    c.replaceInput(0, g.value('x')!);
    c.replaceInput(0, g.value('a')!); // back again: one use, appended last as in an eager graph
    return usesOf(g.value('a'));
  });
  sameAsEager(chainBytes(), (m) => {
    const g = m.graph;
    const id = Node.create('Identity', [g.value('a')!], ['a2'], { name: 'I' });
    g.insertAfter(g.value('a')!.producer!, id);
    g.value('a')!.replaceAllUsesWith(id.output(0), { except: [id] });
    return [usesOf(g.value('a')), usesOf(g.value('a2'))];
  });
});

// ---------------------------------------------------------------- list edits next to stored runs

test('inserting before and after built nodes between stored runs keeps list order', () => {
  sameAsEager(chainBytes(), (m) => {
    const g = m.graph;
    const c = g.value('c')!.producer!; // splits the stored run in two
    g.insertBefore(c, Node.create('Identity', [g.value('b')!], ['pre'], { name: 'P' }));
    g.insertAfter(c, Node.create('Identity', [g.value('c')!], ['post'], { name: 'Q' }));
    g.prepend(Node.create('Identity', [g.inputs[0]!], ['head'], { name: 'H' }));
    g.append(Node.create('Identity', [g.value('e')!], ['tail'], { name: 'T' }));
    // Build the stored neighbours after the inserts.
    void g.value('b')!.producer; void g.value('d')!.producer;
    return g.nodeCount;
  });
});

test('removing built nodes, then building their neighbours and iterating', () => {
  sameAsEager(chainBytes(), (m) => {
    const g = m.graph;
    const e = g.value('e')!.producer!;
    const f = g.value('f')!.producer!;
    f.replaceInput(0, g.value('d')!);
    g.remove(e);
    return [g.nodeCount, usesOf(g.value('d')), g.value('e'), [...g].map(nodeLabel)];
  });
  // Forced removal of a node whose output stored nodes still read.
  sameAsEager(chainBytes(), (m) => {
    const g = m.graph;
    const b = g.value('b')!.producer!;
    g.remove(b, { force: true });
    return [g.value('b'), g.lookup('b'), usesOf(b.output(0)), b.output(0).producer === b];
  });
  // The removed name is free for a new node; the old readers keep the old value.
  sameAsEager(chainBytes(), (m) => {
    const g = m.graph;
    g.remove(g.value('b')!.producer!, { force: true });
    g.append(Node.create('Identity', [g.inputs[0]!], ['b'], { name: 'B2' }));
    return [usesOf(g.value('b')), g.value('c')!.producer!.input(1) === g.value('b')];
  });
});

test('moving a built node to another graph', () => {
  sameAsEager(chainBytes(), (m) => {
    const g = m.graph;
    const e = g.value('e')!.producer!;
    g.remove(e, { force: true });
    const other = new Graph({ name: 'other' });
    other.append(e);
    return [usesOf(g.value('d')), e.graph === other, g.value('e'), usesOf(e.output(0))];
  });
});

test('iterators, next/prev and first/last after partial builds', () => {
  sameAsEager(chainBytes(), (m) => {
    const g = m.graph;
    const c = g.value('c')!.producer!;
    const seen = [nodeLabel(c.prev!), nodeLabel(c.next!), nodeLabel(g.first!), nodeLabel(g.last!)];
    const it = g[Symbol.iterator]();
    seen.push(nodeLabel(it.next().value as Node));
    g.remove(g.value('f')!.producer!, { force: true });
    for (let s = it.next(); !s.done; s = it.next()) seen.push(nodeLabel(s.value));
    return seen;
  });
});

// ---------------------------------------------------------------- renames and declarations

test('renaming inputs, initializers and stored values that stored nodes read', () => {
  const bytes = bytesOf(chain.concat([['Add', ['w', 'x'], ['g'], 'G']]), { initializers: ['w'], outputs: ['f', 'g'] });
  sameAsEager(bytes, (m) => { m.graph.inputs[0]!.name = 'x_renamed'; return usesOf(m.graph.value('x_renamed')); });
  sameAsEager(bytes, (m) => { m.graph.initializers[0]!.name = 'w_renamed'; return usesOf(m.graph.value('w_renamed')); });
  sameAsEager(bytes, (m) => { m.graph.value('a')!.name = 'a_renamed'; return [m.graph.value('a'), usesOf(m.graph.value('a_renamed'))]; });
  // A graph output written by a stored node.
  sameAsEager(bytes, (m) => { m.graph.outputs[0]!.name = 'f_renamed'; return m.graph.outputs.map((o) => o.name); });
  // Refused renames: onto a stored name no Value was made for yet.
  sameAsEager(bytes, (m) => { m.graph.inputs[0]!.name = 'd'; });
  sameAsEager(bytes, (m) => { m.graph.value('a')!.name = 'w'; });
});

test('removeInput, removeInitializer, initializerToInput on values stored nodes read', () => {
  const bytes = bytesOf(chain.concat([['Add', ['w', 'x'], ['g'], 'G']]), { initializers: ['w'], outputs: ['f', 'g'] });
  sameAsEager(bytes, (m) => m.graph.removeInput(0));
  sameAsEager(bytes, (m) => { m.graph.removeInput(0, { force: true }); return [m.graph.value('x'), m.graph.lookup('x')]; });
  sameAsEager(bytes, (m) => m.graph.removeInitializer(m.graph.initializers[0]!));
  sameAsEager(bytes, (m) => { const w = m.graph.initializerToInput(m.graph.initializers[0]!); return [w.isGraphInput, usesOf(w)]; });
  // After a forced removal a new input may take the name; the stored readers keep the old value.
  sameAsEager(bytes, (m) => {
    const g = m.graph;
    const old = g.removeInput(0, { force: true });
    g.addInput(new Value('x'));
    return [usesOf(old), usesOf(g.value('x')), g.value('a')!.producer!.input(0) === old];
  });
});

test('odd declarations: an input listed twice, an initializer that is also an input, value_info and outputs on stored values, empty names', () => {
  const nodes: Spec[] = [['Add', ['x', 'w'], ['a'], 'A'], ['Split', ['a'], ['s0', '', 's2'], 'S'], ['Max', ['s0', '', 's2'], ['y'], 'M']];
  const bytes = bytesOf(nodes, { inputs: ['x', 'x', 'w'], initializers: ['w'], outputs: ['y', 'a', 's2'], valueInfo: ['s0', 'a'] });
  sameAsEager(bytes, (m) => [m.graph.inputs.length, m.graph.inputs[0] === m.graph.inputs[1], usesOf(m.graph.inputs[0])]);
  sameAsEager(bytes, (m) => [m.graph.valueInfo[0]!.producer?.name, usesOf(m.graph.valueInfo[1]), m.graph.outputs.map((o) => o.producer?.name)]);
  sameAsEager(bytes, (m) => { m.graph.removeInput(1); return usesOf(m.graph.inputs[0]); });
  sameAsEager(bytes, (m) => m.graph.remove(m.graph.value('s2')!.producer!));
  // A graph input with the empty name, unread.
  sameAsEager(bytesOf(nodes, { inputs: ['', 'x', 'w'], initializers: ['w'], outputs: ['y'] }), (m) => m.graph.inputs.map((i) => [i.name, usesOf(i)]));
});

test('training graphs reading main-graph values: uses in the same order as an eager decode', () => {
  const bytes = bytesOf(chain, { outputs: ['f'], training: [['Neg', ['a'], ['ta'], 'TA'], ['Add', ['d', 'x'], ['td'], 'TD']] });
  sameAsEager(bytes, (m) => [usesOf(m.graph.value('a')), usesOf(m.graph.value('d')), usesOf(m.graph.inputs[0])]);
  sameAsEager(bytes, (m) => { m.graph.value('d')!.name = 'd2'; return m.trainingInfo[0]!.algorithm!.nodes.map((n) => n.inputs.map((v) => v?.name)); });
});

// ---------------------------------------------------------------- whole-graph operations

test('clone of a partly built, edited graph', () => {
  sameAsEager(chainBytes(), (m) => {
    const g = m.graph;
    g.insertAfter(g.value('c')!.producer!, Node.create('Identity', [g.value('c')!], ['ci'], { name: 'CI' }));
    const copy = m.clone();
    return [snapshot(copy), sameBytes(encodeModel(copy), encodeModel(m))];
  });
});

test('NameAllocator over a partly built graph after removals and renames', () => {
  sameAsEager(chainBytes(), (m) => {
    const g = m.graph;
    g.remove(g.value('e')!.producer!, { force: true });
    g.value('b')!.name = 'b_new';
    g.append(Node.create('Identity', [g.value('f')!], ['fresh'], { name: 'Z' }));
    const names = m.names;
    return [['a', 'b', 'b_new', 'e', 'E', 'C', 'fresh', 'Z'].map((n) => names.has(n)), names.fresh('e'), names.fresh('b'), names.fresh('C')];
  });
});

test('findNodes and opTypeCounts after edits', () => {
  sameAsEager(chainBytes(), (m) => {
    const g = m.graph;
    g.remove(g.value('e')!.producer!, { force: true });
    g.insertBefore(g.value('c')!.producer!, Node.create('Add', [g.inputs[0]!, g.inputs[0]!], ['xx'], { name: 'Anew' }));
    return [g.findNodes({ opType: ['Add', 'Sigmoid'] }).map(nodeLabel), g.findNodes({ namePrefix: 'A' }).map(nodeLabel), [...g.opTypeCounts()].sort()];
  });
});

// ---------------------------------------------------------------- hand-written node bodies

const utf8 = (s: string) => new TextEncoder().encode(s);
const cat = (...parts: (Uint8Array | number[])[]): Uint8Array => {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) { out.set(p, at); at += p.length; }
  return out;
};
const tagOf = (field: number, wire: number) => encodeVarint(field * 8 + wire);
/** A length-delimited field; `prefix` replaces the minimal length prefix (to write non-minimal ones). */
const bytesField = (field: number, body: Uint8Array | string, prefix?: number[]) => {
  const b = typeof body === 'string' ? utf8(body) : body;
  return cat(tagOf(field, 2), prefix ?? encodeVarint(b.length), b);
};
const varintField = (field: number, value: number) => cat(tagOf(field, 0), encodeVarint(value));
const f32 = (x: number) => new Uint8Array(new Float32Array([x]).buffer);
/** NodeProto fields: 1 input, 2 output, 3 name, 4 op_type, 5 attribute, 6 doc_string, 7 domain, 8 overload, 9 metadata_props. */
const relu = (...extra: (Uint8Array | number[])[]) => cat(bytesField(1, 'x'), bytesField(2, 'y'), bytesField(3, 'R'), bytesField(4, 'Relu'), ...extra);
const attribute = (...fields: (Uint8Array | number[])[]) => bytesField(5, cat(...fields));

/** A model whose main graph holds exactly these node entries (each an already framed field, or a body framed minimally). */
function modelWith(entries: Uint8Array[], options: { framed?: boolean; outputs?: string[] } = {}): Uint8Array {
  const shell = encodeModelProto({ ir_version: 9, opset_import: [{ domain: '', version: 17 }] });
  const rest = encodeModelProto({ graph: { name: 'main', input: [info('x')], output: (options.outputs ?? ['y']).map(info) } });
  // rest is "graph field, length, GraphProto body": take the body.
  const after = 1 + encodeVarint(rest.length - 1 - 1).length;
  const graphBody = cat(...entries.map((e) => (options.framed ? e : bytesField(1, e))), rest.subarray(after));
  return cat(shell, bytesField(7, graphBody));
}

const errorOf = (f: () => unknown) => { try { f(); return undefined; } catch (error) { return error; } };
function decodeError(e: unknown): unknown {
  if (e === undefined) return 'no error';
  assert.ok(e instanceof OnnxDecodeError, `a typed OnnxDecodeError, got ${String(e)}`);
  return { code: e.code, path: e.path, offset: e.offset, message: e.message };
}

/** The attribute-level view of the main graph's nodes (values as plain data). */
function attributes(model: Model): unknown {
  const plain = (v: unknown): unknown => v instanceof Tensor ? ['tensor', v.dims, Array.from(v.toArray() as ArrayLike<number>)] : Array.isArray(v) ? v.map(plain) : v;
  return model.graph.nodes.map((n) => [n.domain, n.proto.doc_string, n.attributes.map((a) => [a.name, a.kind, plain(a.value)])]);
}

/**
 * Bytes that decodeModel must treat as the full structure check does: the same typed error, or no
 * error and the same graph as an eager decode (and an encode that decodes to the same graph again).
 */
function agrees(bytes: Uint8Array): 'error' | 'decoded' {
  const reference = errorOf(() => checkWireStructure(bytes, ModelProtoType));
  const eagerError = errorOf(() => decodeModelProto(bytes));
  const lazyError = errorOf(() => decodeModel(bytes));
  assert.deepEqual(decodeError(lazyError), decodeError(eagerError), 'decodeModel fails as decodeModelProto does');
  if (reference !== undefined) {
    assert.deepEqual(decodeError(lazyError), decodeError(reference), 'and as the full structure check does');
    return 'error';
  }
  if (eagerError !== undefined) return 'error';
  const lazy = decodeModel(bytes), reference2 = eager(bytes);
  assert.deepEqual(attributes(lazy), attributes(reference2));
  assert.deepEqual(snapshot(lazy), snapshot(reference2));
  const again = decodeModel(encodeModel(decodeModel(bytes)));
  assert.deepEqual(snapshot(again), snapshot(reference2), 're-encoded, it decodes to the same graph');
  assert.deepEqual(attributes(again), attributes(reference2));
  return 'decoded';
}

test('sound but odd node bodies decode exactly as an eager decode', () => {
  const ints = [1, 300, 2 ** 40];
  const packedInts = cat(...ints.map((i) => encodeVarint(i)));
  const cases: Record<string, Uint8Array> = {
    'non-minimal length of an input': cat(bytesField(1, 'x', [0x81, 0x00]), bytesField(2, 'y'), bytesField(4, 'Relu')),
    'unknown length-delimited field 12': relu(bytesField(12, 'kept')),
    'unknown field with a two-byte tag': relu(bytesField(40, 'kept')),
    'unknown varint field': relu(varintField(13, 7)),
    'name written twice': relu(bytesField(3, 'R2')),
    'op_type written twice': relu(bytesField(4, 'Sigmoid')),
    'domain written twice': relu(bytesField(7, 'a'), bytesField(7, '')),
    'doc_string and overload': relu(bytesField(6, 'doc'), bytesField(8, 'ov')),
    'no op_type': cat(bytesField(1, 'x'), bytesField(2, 'y')),
    'metadata_props': relu(bytesField(9, cat(bytesField(1, 'k'), bytesField(2, 'v')))),
    'attribute name with a non-minimal two-byte tag': relu(attribute(cat([0x8a, 0x00], encodeVarint(1), utf8('n')), varintField(3, 5), varintField(20, 2))),
    'packed ints': relu(attribute(bytesField(1, 'ints'), bytesField(8, packedInts), varintField(20, 7))),
    'packed and unpacked ints mixed': relu(attribute(bytesField(1, 'ints'), varintField(8, 9), bytesField(8, packedInts), varintField(8, 4), varintField(20, 7))),
    'packed floats': relu(attribute(bytesField(1, 'fl'), bytesField(7, cat(f32(1.5), f32(-2))), cat(tagOf(7, 5), f32(3)), varintField(20, 6))),
    'empty packed ints': relu(attribute(bytesField(1, 'ints'), bytesField(8, new Uint8Array(0)), varintField(20, 7))),
    'ten-byte varint int': relu(attribute(bytesField(1, 'i'), cat(tagOf(3, 0), [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]), varintField(20, 2))),
    'ten-byte varint with high bits beyond 64': relu(attribute(bytesField(1, 'i'), cat(tagOf(3, 0), [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f]), varintField(20, 2))),
    'int written twice': relu(attribute(bytesField(1, 'i'), varintField(3, 1), varintField(3, 2), varintField(20, 2))),
    'attribute doc_string and ref_attr_name': relu(attribute(bytesField(1, 'r'), bytesField(13, 'd'), bytesField(21, 'outer'), varintField(20, 1))),
    'attribute with an unknown enum type': relu(attribute(bytesField(1, 'u'), varintField(20, 99))),
    'empty attribute': relu(attribute()),
    'tensor attribute': relu(attribute(bytesField(1, 'value'), bytesField(5, cat(varintField(1, 1), varintField(2, 1), cat(tagOf(4, 5), f32(7)))), varintField(20, 4))),
    'string attribute not UTF-8': relu(attribute(bytesField(1, 's'), bytesField(4, new Uint8Array([0xff, 0xfe])), varintField(20, 3))),
    'node name not UTF-8': cat(bytesField(1, 'x'), bytesField(2, 'y'), bytesField(3, new Uint8Array([0x52, 0xc0, 0x80])), bytesField(4, 'Relu')),
    'empty body': new Uint8Array(0),
  };
  for (const [what, body] of Object.entries(cases)) {
    const bytes = modelWith([body]);
    assert.equal(agrees(bytes), 'decoded', what);
    // Fields the node reader leaves to the full check (a varint field, a two-byte tag) take the eager decoder; the rest stay stored.
    const eagerOnly = what === 'unknown varint field' || what === 'unknown field with a two-byte tag';
    assert.equal(storeOf(decodeModel(bytes).graph) !== undefined, !eagerOnly, `${what}: stored`);
  }
  // Node entries framed oddly in the graph: a non-minimal length prefix, a non-minimal two-byte tag.
  const body = relu();
  for (const entry of [cat([0x0a], [body.length | 0x80, 0x00], body), cat([0x8a, 0x00], encodeVarint(body.length), body)]) {
    const bytes = modelWith([entry, bytesField(1, cat(bytesField(1, 'y'), bytesField(2, 'z'), bytesField(4, 'Neg')))], { framed: true, outputs: ['z'] });
    assert.equal(agrees(bytes), 'decoded');
  }
});

test('hostile node bodies fail with the same OnnxDecodeError as the full structure check', () => {
  const cases: Record<string, Uint8Array> = {
    'name as a varint': relu(varintField(3, 1)),
    'input claims more bytes than the node has': cat(bytesField(1, 'x'), tagOf(1, 2), [50], utf8('y')),
    'field number 0': relu(bytesField(0, 'z')),
    'wire type 6': relu([0x0e]),
    'group wire type': relu([0x6b]),
    'length prefix of six bytes': relu(cat(tagOf(6, 2), [0x81, 0x80, 0x80, 0x80, 0x80, 0x00], utf8('d'))),
    'tag of six bytes': relu([0xfa, 0xff, 0xff, 0xff, 0xff, 0x01, 0x00]),
    'attribute f as a varint': relu(attribute(bytesField(1, 'f'), varintField(2, 1))),
    'attribute i as fixed32': relu(attribute(bytesField(1, 'i'), cat(tagOf(3, 5), f32(1)))),
    'attribute type as a string': relu(attribute(bytesField(1, 'i'), bytesField(20, 'x'))),
    'attribute packed floats of five bytes': relu(attribute(bytesField(1, 'fl'), bytesField(7, new Uint8Array(5)))),
    'attribute packed ints ending mid varint': relu(attribute(bytesField(1, 'ints'), bytesField(8, new Uint8Array([1, 0x80])))),
    'attribute packed ints with an eleven-byte varint': relu(attribute(bytesField(1, 'ints'), bytesField(8, new Uint8Array([0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01])))),
    'attribute varint of eleven bytes': relu(attribute(bytesField(1, 'i'), cat(tagOf(3, 0), [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]))),
    'attribute fixed32 cut short': relu(bytesField(5, cat(bytesField(1, 'f'), tagOf(2, 5), [0, 0]))),
    'attribute field number 0': relu(attribute(bytesField(1, 'a'), [0x00, 0x01])),
    'attribute three-byte tag of an unknown field, cut short': relu(attribute(bytesField(1, 'a'), [0x82, 0x80, 0x01])),
    'attribute with a group': relu(attribute(bytesField(1, 'a'), [0x1b])),
    'attribute tensor with a bad field': relu(attribute(bytesField(1, 't'), bytesField(5, cat(tagOf(1, 2), [9])), varintField(20, 4))),
    'attribute graph with a bad node': relu(attribute(bytesField(1, 'g'), bytesField(6, bytesField(1, cat(varintField(3, 1)))), varintField(20, 5))),
    'metadata_props with a bad entry': relu(bytesField(9, varintField(1, 3))),
    'attribute length prefix above 2^31': relu(cat(tagOf(5, 2), [0x80, 0x80, 0x80, 0x80, 0x08])),
  };
  for (const [what, body] of Object.entries(cases)) {
    // A first node that writes another name, so the graph would be one the store holds but for the body.
    assert.equal(agrees(modelWith([cat(bytesField(1, 'x'), bytesField(2, 'n'), bytesField(4, 'Neg')), body])), 'error', what);
  }
});

test('subgraphs nested to the depth limit inside a main-graph node: the same verdict as the full check', () => {
  // TypeProto -> sequence_type -> elem_type -> ...: two messages per level, in an attribute's tp.
  let tp = varintField(1, 1);
  for (let level = 0; level < 60; level++) {
    tp = bytesField(4, bytesField(1, tp)); // TypeProto.sequence_type { elem_type: tp }
    if (level < 40) continue;
    const bytes = modelWith([relu(attribute(bytesField(1, 'tp'), bytesField(14, tp), varintField(20, 13)))]);
    agrees(bytes);
  }
});

test('op types and node names that are not UTF-8: findNodes, opTypeCounts and names as an eager decode', () => {
  const odd = new Uint8Array([0x52, 0xff, 0x75]);
  const bytes = modelWith([cat(bytesField(1, 'x'), bytesField(2, 'y'), bytesField(3, odd), bytesField(4, odd))]);
  const lazy = decodeModel(bytes), reference = eager(bytes);
  assert.ok(storeOf(lazy.graph));
  const opType = reference.graph.nodes[0]!.opType;
  assert.deepEqual([...lazy.graph.opTypeCounts()], [...reference.graph.opTypeCounts()]);
  assert.equal(lazy.graph.findNodes({ opType }).length, 1);
  assert.equal(lazy.graph.findNodes({ namePrefix: reference.graph.nodes[0]!.name! }).length, 1);
  assert.equal(lazy.names.has(reference.graph.nodes[0]!.name!), true);
});

test('a model with its graph field twice decodes as protobuf merges it', () => {
  const one = modelWith([relu()]);
  const second = bytesField(7, bytesField(1, cat(bytesField(1, 'y'), bytesField(2, 'z'), bytesField(4, 'Neg'))));
  assert.equal(agrees(cat(one, second)), 'decoded');
  const hostile = bytesField(7, bytesField(1, relu(varintField(3, 1))));
  assert.equal(agrees(cat(one, hostile)), 'error');
});
