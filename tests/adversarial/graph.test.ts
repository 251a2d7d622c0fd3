/**
 * Hostile models against the graph layer (security audit, issue 16): tags and lengths protobufjs
 * refuses, attributes whose type disagrees with their value, names that are Object.prototype
 * keys, very large and very deep graphs, and byte-exact nodes (sourceBytes / adoptSourceBytes).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync, readFileSync } from 'node:fs';
import path from 'node:path';
import {
  Attribute, Graph, GraphBuilder, GraphEditError, ModelBuilder, Node, OnnxDecodeError, OnnxModelError, OnnxNeftuneError, Tensor, Value,
  decodeModel, encodeModel, parseDataType, tensorType, topologicalSort, type Model,
} from '../../src/graph/index.js';
import { encodeVarint } from '../../src/graph/varint.js';
import { applyNeftune, findEmbeddings, stripNeftune } from '../../src/passes/index.js';
import { buildTinyGpt } from '../../examples/models.js';
import { firstDifference, sameBytes } from '../helpers.js';
import { runCli, tempDir } from '../cli-helpers.js';

// ---------------------------------------------------------------- hand-made protobuf bytes

const utf8 = (s: string) => new TextEncoder().encode(s);
function cat(...parts: (Uint8Array | number[])[]): Uint8Array {
  const arrays = parts.map((p) => (p instanceof Uint8Array ? p : Uint8Array.from(p)));
  const out = new Uint8Array(arrays.reduce((n, a) => n + a.length, 0));
  let at = 0;
  for (const a of arrays) { out.set(a, at); at += a.length; }
  return out;
}
const field = (no: number, body: Uint8Array) => cat(encodeVarint(no * 8 + 2), encodeVarint(body.length), body);
const varintField = (no: number, value: number) => cat(encodeVarint(no * 8), encodeVarint(value));
const text = (no: number, s: string) => field(no, utf8(s));

/** NodeProto fields: input 1, output 2, name 3, op_type 4, attribute 5, doc_string 6, domain 7. */
const reluNode = cat(text(1, 'x'), text(2, 'y'), text(4, 'Relu'));
/** A ModelProto whose graph has the given node bodies, input x and output y. */
function modelWith(...nodeBodies: Uint8Array[]): Uint8Array {
  const graph = cat(...nodeBodies.map((b) => field(1, b)), text(2, 'g'), field(11, text(1, 'x')), field(12, text(1, 'y')));
  return cat(varintField(1, 8), field(7, graph), field(8, cat(text(1, ''), varintField(2, 17))));
}
/** A node holding `body` as the `then_branch` GRAPH attribute (an If), the subgraph's node bodies given. */
function ifNodeWith(...subNodeBodies: Uint8Array[]): Uint8Array {
  const sub = cat(...subNodeBodies.map((b) => field(1, b)), text(2, 'then'), field(12, text(1, 'y')));
  const attribute = cat(text(1, 'then_branch'), field(6, sub), varintField(20, 5));
  return cat(text(1, 'x'), text(2, 'z'), text(4, 'If'), field(5, attribute));
}

function decodeTyped(bytes: Uint8Array): OnnxNeftuneError | Model {
  try {
    return decodeModel(bytes);
  } catch (error) {
    if (error instanceof OnnxNeftuneError) return error;
    throw new Error(`untyped failure: ${(error as Error).stack}`);
  }
}

// ---------------------------------------------------------------- 1. bytes protobufjs refuses

const BAD_TAIL: [string, number[], RegExp][] = [
  ['a 6-byte tag', [0xf8, 0xff, 0xff, 0xff, 0xff, 0x01, 0x00], /invalid field tag/],
  ['a 5-byte tag above 2^32', [0xf8, 0xff, 0xff, 0xff, 0x7f, 0x00], /invalid field tag/],
  ['a 6-byte length prefix', [0x32, 0x81, 0x80, 0x80, 0x80, 0x80, 0x00, 0x41], /invalid length prefix/],
  ['field number 0', [0x02, 0x00], /field number 0/],
  // Field 30 is unknown to every message involved.
  ['a start-group wire type', [0xf3, 0x01, 0x00], /group wire type/],
  ['an end-group wire type', [0xf4, 0x01], /group wire type/],
  ['wire type 6', [0xf6, 0x01, 0x00], /invalid wire type 6/],
  ['wire type 7', [0xf7, 0x01, 0x00], /invalid wire type 7/],
  ['an 11-byte varint', [0xf0, 0x01, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01], /longer than 10 bytes/],
  ['a length past the parent', [0x32, 0x7f, 0x41], /claims 127 bytes/],
];

test('bytes protobufjs refuses are OnnxDecodeErrors with a path, in the model, a node, an attribute and a subgraph node', () => {
  const places: [string, (tail: Uint8Array) => Uint8Array, RegExp][] = [
    ['model', (t) => cat(modelWith(reluNode), t), /at ModelProto /],
    ['node', (t) => modelWith(cat(reluNode, t)), /ModelProto\.graph\.node\[0\]/],
    ['attribute', (t) => modelWith(cat(reluNode, field(5, cat(text(1, 'a'), varintField(20, 2), varintField(3, 1), t)))), /node\[0\]\.attribute\[0\]/],
    ['subgraph node', (t) => modelWith(ifNodeWith(cat(text(2, 'y'), text(4, 'Identity'), t))), /attribute\[0\]\.g\.node\[0\]/],
  ];
  assert.ok(!(decodeTyped(modelWith(reluNode)) instanceof Error), 'the clean model decodes');
  for (const [where, build, pathPattern] of places) {
    assert.ok(!(decodeTyped(build(new Uint8Array())) instanceof Error), `the clean ${where} decodes`);
    for (const [label, tail, reason] of BAD_TAIL) {
      const result = decodeTyped(build(Uint8Array.from(tail)));
      assert.ok(result instanceof OnnxDecodeError, `${label} in the ${where}: expected OnnxDecodeError, got ${result instanceof Error ? result.message : 'a model'}`);
      assert.match(result.message, reason, `${label} in the ${where}`);
      assert.match(result.message, pathPattern, `${label} in the ${where}`);
    }
  }
});

test('a 5-byte tag protobufjs accepts (non-minimal, below 2^32) stays accepted', () => {
  const bytes = modelWith(cat(reluNode, [0xf8, 0xff, 0xff, 0xff, 0x0f, 0x00])); // unknown field 2^29 - 1
  const model = decodeModel(bytes);
  assert.ok(sameBytes(encodeModel(model), bytes));
});

test('the CLI reports an invalid tag inside a node as an invalid model (exit 4), without a stack', () => {
  const dir = tempDir('bad-tag');
  const file = path.join(dir, 'bad.onnx');
  writeFileSync(file, modelWith(cat(reluNode, [0xf8, 0xff, 0xff, 0xff, 0xff, 0x01, 0x00])));
  for (const args of [['inspect', file], ['patch', file, '-o', path.join(dir, 'out.onnx')], ['strip', file, '-o', path.join(dir, 'out2.onnx')]]) {
    const r = runCli(args);
    assert.equal(r.code, 4, `${args[0]}: ${r.stdout}${r.stderr}`);
    assert.match(r.stderr, /invalid field tag/);
    assert.doesNotMatch(r.stderr, /\n\s+at /, 'no stack trace');
  }
});

// ---------------------------------------------------------------- 2. attribute type vs value

/** A token-embedding model whose Gather carries `attribute` besides its axis. */
function gatherModelWith(attribute: Attribute, options: { replaceAxis?: boolean } = {}): Uint8Array {
  const model = buildTinyGpt({ vocab: 8, dim: 4, maxPositions: 4 });
  const lookup = [...model.graph].find((n) => n.name === 'wte_lookup')!;
  if (options.replaceAxis) lookup.attributes.splice(0, lookup.attributes.length);
  lookup.attributes.push(attribute);
  return encodeModel(model);
}

const MISMATCHED: [string, Attribute, unknown][] = [
  ['STRING without s', new Attribute({ name: 'note', type: 3 }), ''],
  ['INTS without ints', new Attribute({ name: 'note', type: 7 }), []],
  ['FLOATS without floats', new Attribute({ name: 'note', type: 6 }), []],
  ['STRINGS without strings', new Attribute({ name: 'note', type: 8 }), []],
  ['TENSOR without t', new Attribute({ name: 'note', type: 4 }), undefined],
  ['GRAPH without g', new Attribute({ name: 'note', type: 5 }), undefined],
  ['GRAPHS without graphs', new Attribute({ name: 'note', type: 10 }), []],
  ['TYPE_PROTO without tp', new Attribute({ name: 'note', type: 13 }), undefined],
  ['INT with only s', new Attribute({ name: 'note', type: 2, s: utf8('x') }), 0],
  ['STRING with only i', new Attribute({ name: 'note', type: 3, i: 5 }), ''],
  // protobufjs keeps an enum value it does not know as an unknown field; the IR still sees it.
  ['an unknown type number', new Attribute({ name: 'note', type: 99, i: 5 }), undefined],
];

test('attributes whose type disagrees with their value fields decode to the type\'s empty value and round-trip', () => {
  for (const [label, attribute, expected] of MISMATCHED) {
    const bytes = gatherModelWith(attribute);
    const model = decodeModel(bytes);
    const node = [...model.graph].find((n) => n.name === 'wte_lookup')!;
    assert.deepEqual(node.attribute('note')!.value, expected, label);
    assert.deepEqual(node.attributeValue('note'), expected, label);
    assert.ok(sameBytes(encodeModel(model), bytes), `${label}: round trip`);
    findEmbeddings(model);
    const patched = decodeModel(bytes);
    applyNeftune(patched);
    const back = decodeModel(encodeModel(patched));
    stripNeftune(back);
    assert.ok(sameBytes(encodeModel(back), bytes), `${label}: strip(patch) restores the bytes`);
  }
});

test('attributeValue with a fallback refuses an attribute of another sort with OnnxModelError naming node and attribute', () => {
  const node = new Node('Gather', [], [], { name: 'lookup', attributes: [new Attribute({ name: 'axis', type: 3 }), new Attribute({ name: 'odd', type: 42 })] });
  assert.throws(() => node.attributeValue<number>('axis', 0), (e: unknown) =>
    e instanceof OnnxModelError && /Gather "lookup"/.test(e.message) && /"axis" is STRING, expected a number/.test(e.message));
  assert.throws(() => node.attributeValue<string>('odd', ''), (e: unknown) =>
    e instanceof OnnxModelError && /"odd" is of unknown type 42/.test(e.message));
  assert.equal(node.attributeValue('axis'), '', 'without a fallback the value is returned as it is');
  assert.equal(node.attributeValue<number>('missing', 7), 7);
});

test('the CLI handles mismatched attributes: inspect, patch and strip exit 0 or 4, never 1', () => {
  const dir = tempDir('attr-mismatch');
  const cases: [string, Uint8Array][] = MISMATCHED.map(([label, a]) => [label, gatherModelWith(a)]);
  // The lookup's own axis with the wrong type: the lookup cannot be judged, so the model is refused.
  cases.push(['axis typed STRING without s', gatherModelWith(new Attribute({ name: 'axis', type: 3 }), { replaceAxis: true })]);
  cases.push(['axis typed INTS without ints', gatherModelWith(new Attribute({ name: 'axis', type: 7 }), { replaceAxis: true })]);
  cases.forEach(([label, bytes], i) => {
    const file = path.join(dir, `m${i}.onnx`);
    writeFileSync(file, bytes);
    const out = path.join(dir, `m${i}.patched.onnx`);
    const inspect = runCli(['inspect', file]);
    assert.ok([0, 4].includes(inspect.code), `${label}: inspect exit ${inspect.code}\n${inspect.stderr}`);
    const patch = runCli(['patch', file, '-o', out]);
    assert.ok([0, 3, 4].includes(patch.code), `${label}: patch exit ${patch.code}\n${patch.stderr}`);
    if (label.startsWith('axis')) assert.equal(patch.code, 4, `${label}: ${patch.stderr}`);
    if (patch.code === 0) {
      const stripped = path.join(dir, `m${i}.stripped.onnx`);
      const strip = runCli(['strip', out, '-o', stripped]);
      assert.equal(strip.code, 0, `${label}: strip ${strip.stderr}`);
      assert.ok(sameBytes(new Uint8Array(readFileSync(stripped)), bytes), `${label}: strip restores the bytes`);
    }
  });
});

// ---------------------------------------------------------------- 3. Object.prototype names

const PROTO_NAMES = ['__proto__', 'constructor', 'toString', 'hasOwnProperty', 'valueOf'];

/** Every name of a token-embedding model is one of PROTO_NAMES, rotated by `shift`. */
function protoNamedModel(shift: number): Model {
  const name = (i: number) => PROTO_NAMES[(i + shift) % PROTO_NAMES.length]!;
  const b = new ModelBuilder({ opset: 17, irVersion: 8, graphName: name(0) });
  const ids = b.input(name(0), 'int64', ['batch', 'seq']);
  const table = b.initializer(name(1), Tensor.fromArray('float', [10, 4], new Float32Array(40).map((_, i) => i / 10)));
  const emb = b.op('Gather', [table, ids], { axis: 0 }, { name: name(2), outputs: [name(3)] });
  const y = b.op('Relu', [emb], {}, { name: name(3), outputs: [name(4)] });
  b.output(y, 'float', ['batch', 'seq', 4]);
  const model = b.build();
  emb.info = { name: emb.name, type: tensorType('float', ['batch', 'seq', 4]) };
  model.graph.valueInfo.push(emb);
  model.metadata.set(name(0), name(1));
  return model;
}

test('values, nodes, initializers and value_info named __proto__, constructor, ... round-trip, patch and strip', () => {
  for (let shift = 0; shift < PROTO_NAMES.length; shift++) {
    const bytes = encodeModel(protoNamedModel(shift));
    const model = decodeModel(bytes);
    assert.ok(sameBytes(encodeModel(model), bytes), `shift ${shift}: round trip`);
    assert.equal(model.graph.value(PROTO_NAMES[(3 + shift) % 5]!)?.producer?.opType, 'Gather');
    const report = findEmbeddings(model);
    assert.equal(report.candidates.length, 1, `shift ${shift}: one lookup`);
    applyNeftune(model);
    const patched = decodeModel(encodeModel(model));
    stripNeftune(patched);
    const restored = encodeModel(patched);
    assert.ok(sameBytes(restored, bytes), `shift ${shift}: strip restores, first difference at ${firstDifference(restored, bytes)}`);
  }
});

test('the CLI inspects, patches and strips models whose names are Object.prototype keys', () => {
  const dir = tempDir('proto-names');
  for (let shift = 0; shift < PROTO_NAMES.length; shift++) {
    const file = path.join(dir, `m${shift}.onnx`);
    const bytes = encodeModel(protoNamedModel(shift));
    writeFileSync(file, bytes);
    for (const args of [['inspect', file], ['inspect', file, '--json']]) {
      const r = runCli(args);
      assert.equal(r.code, 0, `${args.join(' ')}: ${r.stderr}`);
    }
    const patched = path.join(dir, `m${shift}.p.onnx`);
    const stripped = path.join(dir, `m${shift}.s.onnx`);
    const patch = runCli(['patch', file, '-o', patched, '--table', PROTO_NAMES[(1 + shift) % 5]!]);
    assert.equal(patch.code, 0, patch.stderr);
    const strip = runCli(['strip', patched, '-o', stripped]);
    assert.equal(strip.code, 0, strip.stderr);
    assert.ok(sameBytes(new Uint8Array(readFileSync(stripped)), bytes), `shift ${shift}: strip restores the bytes`);
  }
});

test('parseDataType takes only data type names, not the enum\'s reverse entries or prototype keys', () => {
  for (const bad of ['__proto__', 'constructor', 'toString', '1', 'valueOf']) {
    assert.throws(() => parseDataType(bad), (e: Error) => e instanceof GraphEditError && /Unknown ONNX data type/.test(e.message), bad);
  }
  assert.equal(parseDataType('float16'), 10);
});

// ---------------------------------------------------------------- 4. large and deep

test('a 200,000-node graph decodes, patches, strips and encodes without recursion or argument spreads', { timeout: 120_000 }, () => {
  const b = new ModelBuilder({ opset: 17, irVersion: 8 });
  const ids = b.input('input_ids', 'int64', ['batch', 'seq']);
  const table = b.constant('embed', 'float', [16, 4], new Float32Array(64));
  let x = b.op('Gather', [table, ids], { axis: 0 }, { name: 'lookup', outputs: ['embeds'] });
  for (let i = 0; i < 200_000; i++) x = b.op('Relu', [x], {}, { name: `n${i}`, outputs: [`v${i}`] });
  b.output(x, 'float', ['batch', 'seq', 4]);
  const bytes = encodeModel(b.build());
  const model = decodeModel(bytes);
  assert.equal(model.graph.nodeCount, 200_001);
  assert.equal([...model.graph.allNodes()].length, 200_001);
  topologicalSort(model.graph);
  applyNeftune(model);
  const patched = decodeModel(encodeModel(model));
  stripNeftune(patched);
  assert.ok(sameBytes(encodeModel(patched), bytes));
});

test('200,000 unknown fields, graph inputs and subgraphs of one attribute do not overflow the stack', { timeout: 120_000 }, () => {
  const many = 200_000;
  // Unknown fields in the ModelProto, in runs split by the graph field (merged on decode).
  const unknown = new Uint8Array(many * 2);
  for (let i = 0; i < many; i++) { unknown[2 * i] = 0xf8; unknown[2 * i + 1] = 0x01; } // field 31, varint 1
  const base = modelWith(reluNode);
  const withUnknowns = cat(unknown, base, unknown);
  const once = encodeModel(decodeModel(withUnknowns)); // unknown fields are written after the known ones
  assert.equal(once.length, withUnknowns.length);
  assert.ok(sameBytes(encodeModel(decodeModel(once)), once));
  // A GRAPHS attribute with 200,000 empty subgraphs.
  const graphs = new Uint8Array(many * 2);
  for (let i = 0; i < many; i++) { graphs[2 * i] = 11 * 8 + 2; graphs[2 * i + 1] = 0; } // graphs: empty GraphProto
  const node = cat(reluNode, field(5, cat(text(1, 'bodies'), graphs, varintField(20, 10))));
  const bytes = modelWith(node);
  const model = decodeModel(bytes);
  assert.equal(model.graph.first!.subgraphs().length, many);
  assert.equal([...model.allGraphs()].length, many + 1);
  assert.ok(sameBytes(encodeModel(model), bytes));
  // 200,000 graph inputs.
  const inputs = cat(...Array.from({ length: 2000 }, (_, i) => field(11, text(1, `in${i}`))));
  const wide = cat(varintField(1, 8), field(7, cat(...Array.from({ length: 100 }, () => inputs))));
  assert.ok(sameBytes(encodeModel(decodeModel(wide)), wide));
});

/** If nodes nested `depth` deep as bytes: each level is a graph holding one If whose then_branch is the next. */
function nestedIfBytes(depth: number): Uint8Array {
  const graphOf = (node: Uint8Array, output: string, inputs: Uint8Array = new Uint8Array()) => cat(field(1, node), inputs, field(12, text(1, output)));
  let graph = graphOf(cat(text(1, 'x'), text(2, 'y0'), text(4, 'Identity')), 'y0');
  for (let level = 1; level <= depth; level++) {
    const attribute = cat(text(1, 'then_branch'), field(6, graph), varintField(20, 5));
    const node = cat(text(1, 'c'), text(2, `y${level}`), text(4, 'If'), field(5, attribute));
    graph = graphOf(node, `y${level}`, level === depth ? cat(field(11, text(1, 'x')), field(11, text(1, 'c'))) : undefined);
  }
  return cat(varintField(1, 8), field(7, graph), field(8, cat(text(1, ''), varintField(2, 17))));
}

/** The same nesting built with the builder. */
function nestedIfModel(depth: number): Model {
  const b = new ModelBuilder({ opset: 17, irVersion: 8 });
  const x = b.input('x', 'float', [1]);
  const c = b.input('c', 'bool', []);
  let inner: GraphBuilder = b;
  const chain: GraphBuilder[] = [b];
  for (let level = 0; level < depth; level++) { inner = inner.subgraph(`g${level}`); chain.push(inner); }
  inner.output(inner.op('Identity', [x], {}, { outputs: [`y${depth}`] }));
  for (let level = depth - 1; level >= 0; level--) {
    const g = chain[level]!;
    g.output(g.op('If', [c], { then_branch: chain[level + 1]! }, { outputs: [`y${level}`] }));
  }
  return b.build();
}

test('subgraphs nested 150 deep: bytes are refused by decode, a built model by encode, both typed', () => {
  const shallow = nestedIfBytes(20);
  assert.ok(sameBytes(encodeModel(decodeModel(shallow)), shallow), 'nesting 20 round-trips');
  const deep = decodeTyped(nestedIfBytes(150));
  assert.ok(deep instanceof OnnxDecodeError, 'nesting 150 in bytes');
  assert.match(deep.message, /nested deeper than 100 levels/);
  const built = nestedIfModel(150);
  assert.equal([...built.allGraphs()].length, 150 + 1);
  assert.throws(() => encodeModel(built), (e: unknown) => e instanceof OnnxModelError && /nested more than 32 levels/.test(e.message));
  // Passes walk such a model without recursion troubles and refuse or report it typed.
  try { findEmbeddings(built); } catch (error) { assert.ok(error instanceof OnnxNeftuneError, String(error)); }
});

test('graph walks and sorting handle 20,000 levels of nesting without recursion', { timeout: 60_000 }, () => {
  const depth = 20_000;
  const top = new Graph({ name: 'top' });
  let graph = top;
  for (let level = 0; level < depth; level++) {
    const sub = new Graph({ name: `g${level}` });
    sub.parentScope = graph;
    const attribute = new Attribute({ name: 'body', type: 5 });
    attribute.graphs = [sub];
    attribute.holdsOneGraph = true;
    graph.append(new Node('Loop', [], [new Value(`y${level}`)], { attributes: [attribute] }));
    graph = sub;
  }
  assert.equal([...top.allNodes()].length, depth);
  topologicalSort(top);
  const model = new ModelBuilder({ opset: 17, irVersion: 8 }).build();
  model.graph = top;
  assert.equal([...model.allGraphs()].length, depth + 1);
  assert.throws(() => encodeModel(model), OnnxModelError);
});

// ---------------------------------------------------------------- 6. byte-exact nodes

/** A Gather whose fields are out of canonical order, with an invalid UTF-8 name and a doc_string. */
const oddGather = cat(
  text(4, 'Gather'), text(2, 'embeds'), field(3, Uint8Array.of(0x65, 0xff, 0xfe, 0x6d)), text(1, 'table'), text(1, 'ids'),
  field(5, cat(varintField(20, 2), text(1, 'axis'), varintField(3, 0))), text(7, ''),
);
const oddGatherWithDoc = cat(text(6, 'a doc string before the inputs'), oddGather);

function embeddingModelBytes(nodeBody: Uint8Array): Uint8Array {
  const table = cat(varintField(1, 4), varintField(1, 2), varintField(2, 1), text(8, 'table'), field(9, new Uint8Array(32)));
  const idsType = field(2, cat(field(1, cat(varintField(1, 7), field(2, cat(field(1, text(2, 'b')), field(1, text(2, 's'))))))));
  const graph = cat(field(1, nodeBody), field(1, cat(text(1, 'embeds'), text(2, 'out'), text(4, 'Relu'))), text(2, 'g'),
    field(5, table), field(11, cat(text(1, 'ids'), idsType)), field(12, text(1, 'out')));
  return cat(varintField(1, 8), field(7, graph), field(8, cat(text(1, ''), varintField(2, 17))));
}

test('a node with fields out of order and an invalid UTF-8 name round-trips byte-identically; sourceBytes gives its bytes', () => {
  for (const body of [oddGather, oddGatherWithDoc]) {
    const bytes = embeddingModelBytes(body);
    const model = decodeModel(bytes);
    assert.ok(sameBytes(encodeModel(model), bytes), 'round trip');
    const gather = model.graph.first!;
    assert.equal(gather.name, 'e\ufffd\ufffdm', 'invalid UTF-8 reads as U+FFFD, as protobufjs reads strings');
    assert.ok(sameBytes(gather.sourceBytes()!, body));
    gather.name = 'renamed';
    assert.equal(gather.sourceBytes(), undefined, 'an edited node is not byte-backed');
  }
});

test('after replaceOutput and back, or a rebuilt node, adoptSourceBytes restores the bytes; another attribute refuses', () => {
  for (const body of [oddGather, oddGatherWithDoc]) {
    const bytes = embeddingModelBytes(body);
    const model = decodeModel(bytes);
    const gather = model.graph.first!;
    const original = gather.sourceBytes()!.slice();
    const out = gather.output(0);
    const fresh = new Value('embeds_clean');
    gather.replaceOutput(0, fresh);
    assert.ok(!sameBytes(encodeModel(model), bytes));
    assert.equal(gather.adoptSourceBytes(original), false, 'the bytes say another output');
    gather.replaceOutput(0, out);
    assert.equal(gather.adoptSourceBytes(original), true);
    assert.ok(sameBytes(encodeModel(model), bytes), 'adopted bytes are written as they are');
    assert.ok(sameBytes(gather.sourceBytes()!, original));

    // A node rebuilt from scratch with the same content takes the bytes too.
    const rebuilt = new Node('Gather', [...gather.inputs], [], { name: gather.name!, domain: '', attributes: gather.attributes.map((a) => new Attribute({ ...a.proto })), proto: { ...gather.proto } });
    model.graph.insertAfter(gather, rebuilt);
    model.graph.remove(gather, { force: true });
    rebuilt.appendOutput(out);
    assert.ok(!sameBytes(encodeModel(model), bytes), 'encoded from the IR, the node is canonical');
    assert.equal(rebuilt.adoptSourceBytes(original), true);
    assert.ok(sameBytes(encodeModel(model), bytes), 'the rebuilt node is written as the original bytes');

    // A different attribute value: refused, and the node is encoded from the IR.
    const changed = new Node('Gather', [...rebuilt.inputs], [], { name: rebuilt.name!, domain: '', attributes: [new Attribute({ name: 'axis', type: 2, i: 1 })], proto: { ...rebuilt.proto } });
    model.graph.insertAfter(rebuilt, changed);
    model.graph.remove(rebuilt, { force: true });
    changed.appendOutput(out);
    assert.equal(changed.adoptSourceBytes(original), false);
    assert.equal(changed.sourceBytes(), undefined);
    assert.equal(changed.adoptSourceBytes(Uint8Array.of(0xff, 0xff)), false, 'bytes that are no NodeProto');
  }
});

test('adoptSourceBytes works for a node inside a subgraph', () => {
  const subNode = cat(text(4, 'Identity'), text(2, 'y'), field(3, Uint8Array.of(0x80)), text(1, 'x'));
  const bytes = modelWith(ifNodeWith(subNode));
  const model = decodeModel(bytes);
  const inner = model.graph.first!.subgraphs()[0]!.first!;
  assert.ok(!sameBytes(encodeModel(model), bytes), 'subgraph nodes are decoded by protobufjs and written canonically');
  assert.equal(inner.sourceBytes(), undefined);
  assert.equal(inner.adoptSourceBytes(subNode), true);
  assert.ok(sameBytes(encodeModel(model), bytes), 'the adopted subgraph node is written as its bytes');
  inner.opType = 'Neg';
  assert.ok(!sameBytes(encodeModel(model), bytes), 'an edit after adoption is encoded from the IR');
});

test('patch then strip gives back a lookup node encoded out of canonical order, or with an invalid UTF-8 name, byte for byte (library and CLI)', () => {
  const dir = tempDir('odd-lookup');
  for (const [i, body] of [oddGather, oddGatherWithDoc].entries()) {
    const bytes = embeddingModelBytes(body);
    const model = decodeModel(bytes);
    const result = applyNeftune(model, { tables: ['table'] });
    assert.ok(result.record.sites[0]!.sourceNode, 'the record keeps the lookup node bytes the patch changed');
    const patched = decodeModel(encodeModel(model));
    stripNeftune(patched);
    const stripped = encodeModel(patched);
    assert.ok(sameBytes(stripped, bytes), `library: first difference at byte ${firstDifference(stripped, bytes)}`);
    const file = path.join(dir, `odd${i}.onnx`);
    writeFileSync(file, bytes);
    assert.equal(runCli(['patch', file, '-o', `${file}.patched`, '--table', 'table']).code, 0);
    assert.equal(runCli(['strip', `${file}.patched`, '-o', `${file}.stripped`]).code, 0);
    assert.ok(sameBytes(new Uint8Array(readFileSync(`${file}.stripped`)), bytes), 'CLI: strip restored the original file');
  }
  // A canonical lookup needs no copy: the record stays as small as before.
  const plain = buildTinyGpt();
  assert.equal(applyNeftune(decodeModel(encodeModel(plain))).record.sites[0]!.sourceNode, undefined);
});
