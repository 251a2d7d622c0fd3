import { test } from 'node:test';
import assert from 'node:assert/strict';
import protobuf from 'protobufjs';
import {
  Attribute, decodeModel, decodeModelProto, encodeModel, encodeModelProto, modelFromProto, type Model, type ModelProto,
} from '../src/graph/index.js';
import { ModelProtoType } from '../src/graph/proto.js';
import { buildTinyBert, buildTinyGemma, buildTinyGpt, buildTinyT5 } from '../examples/models.js';
import { firstDifference, fixtureNames, fixturesDir, patchIfPossible, readFixture, sameBytes, skipWithoutFixtures } from './helpers.js';
import { existsSync } from 'node:fs';

test('every third-party fixture round-trips byte for byte through the IR', { skip: skipWithoutFixtures }, () => {
  const names = fixtureNames();
  assert.ok(names.length >= 19, `expected the shared fixtures, found ${names.length}`);
  for (const name of names) {
    const bytes = readFixture(name);
    const out = encodeModel(decodeModel(bytes));
    assert.ok(sameBytes(out, bytes), `${name}: first difference at byte ${firstDifference(out, bytes)}`);
  }
});

const builders = { gpt: buildTinyGpt, bert: buildTinyBert, t5: buildTinyT5, gemma: buildTinyGemma };
for (const [kind, build] of Object.entries(builders)) {
  for (const dtype of ['float', 'float16', 'bfloat16'] as const) {
    test(`builder-made ${kind} (${dtype}) round-trips byte for byte`, () => {
      const bytes = encodeModel(build({ dtype }));
      const again = encodeModel(decodeModel(bytes));
      assert.ok(sameBytes(again, bytes), `first difference at byte ${firstDifference(again, bytes)}`);
      // And the proto layer on its own agrees with the IR path.
      assert.ok(sameBytes(encodeModelProto(decodeModelProto(bytes)), bytes));
    });
  }
}

/** Appends `field` (wire type 0, value 7) to a message's encoding, as a newer ONNX writer would. */
function unknownVarintField(field: number): Uint8Array {
  const w = protobuf.Writer.create();
  w.uint32((field << 3) | 0).uint32(7);
  return w.finish();
}

test('fields from a newer ONNX survive decode, edit and encode', () => {
  const model = buildTinyGpt();
  const base = decodeModelProto(encodeModel(model));
  // Unknown fields at three depths: model, graph, node; and an unknown field inside a tensor.
  (base as { $unknowns?: Uint8Array[] }).$unknowns = [unknownVarintField(100)];
  (base.graph as { $unknowns?: Uint8Array[] }).$unknowns = [unknownVarintField(101)];
  (base.graph!.node![0] as { $unknowns?: Uint8Array[] }).$unknowns = [unknownVarintField(102)];
  (base.graph!.initializer![0] as { $unknowns?: Uint8Array[] }).$unknowns = [unknownVarintField(103)];
  const withUnknowns = encodeModelProto(base);

  const ir = decodeModel(withUnknowns);
  assert.ok(sameBytes(encodeModel(ir), withUnknowns), 'unedited round trip keeps unknown fields byte for byte');

  // Edit the node that carries an unknown field; the field must still be there afterwards.
  const first = ir.graph.first!;
  first.name = 'renamed_by_test';
  const reader = protobuf.Reader.create(encodeModel(ir));
  reader.discardUnknown = false;
  const after = ModelProtoType.decode(reader) as unknown as ModelProto & { $unknowns?: Uint8Array[] };
  const unknownsOf = (m: unknown) => ((m as { $unknowns?: Uint8Array[] }).$unknowns ?? []).map((u) => [...u].join(','));
  assert.deepEqual(unknownsOf(after), [[...unknownVarintField(100)].join(',')]);
  assert.deepEqual(unknownsOf(after.graph), [[...unknownVarintField(101)].join(',')]);
  assert.equal(after.graph!.node![0]!.name, 'renamed_by_test');
  assert.deepEqual(unknownsOf(after.graph!.node![0]), [[...unknownVarintField(102)].join(',')]);
  assert.deepEqual(unknownsOf(after.graph!.initializer![0]), [[...unknownVarintField(103)].join(',')]);
});

test('tensor payloads stay views on the loaded bytes', () => {
  const bytes = encodeModel(buildTinyGpt({ vocab: 128, dim: 32 }));
  const model = decodeModel(bytes);
  const wte = model.graph.initializer('transformer.wte.weight')!.initializer!;
  const raw = wte.rawBytes();
  assert.equal(raw.buffer, bytes.buffer, 'raw_data is a view, not a copy');
  assert.equal(raw.length, 128 * 32 * 4);
  assert.deepEqual(wte.dims, [128, 32]);
});

test('every kind of edit to a node read from bytes reaches the encoding', () => {
  const bytes = encodeModel(buildTinyBert());
  const pick = (m: Model) => [...m.graph].find((n) => n.attributes.length > 0 && n.inputs.length > 0)!;
  const edits: Record<string, (m: Model) => void> = {
    'op type': (m) => { pick(m).opType = 'Renamed'; },
    'node name': (m) => { pick(m).name = 'new_name'; },
    'domain': (m) => { pick(m).domain = 'com.example'; },
    'a kept field set on the proto in place': (m) => { pick(m).proto.doc_string = 'added'; },
    'input replaced': (m) => { const n = pick(m); n.replaceInput(0, m.graph.inputs[0]!); },
    'input value renamed': (m) => { pick(m).inputs[0]!.name = 'renamed_input'; },
    'output value renamed': (m) => { pick(m).outputs[0]!.name = 'renamed_output'; },
    'attribute replaced': (m) => { const n = pick(m); n.attributes[0] = new Attribute({ ...n.attributes[0]!.proto }); n.attributes[0]!.proto.name = 'other'; },
    'attribute removed': (m) => { pick(m).attributes.pop(); },
    'non-ASCII name': (m) => { pick(m).name = 'Knoten_ü_嵌入'; },
  };
  for (const [label, edit] of Object.entries(edits)) {
    const model = decodeModel(bytes);
    const expected = decodeModelProto(bytes);
    edit(model);
    const reference = modelFromProto(expected); // the same edit on a model built from messages, not bytes
    edit(reference);
    const viaBytes = encodeModel(model);
    assert.ok(!sameBytes(viaBytes, bytes), `${label}: the edit changed the encoding`);
    assert.ok(sameBytes(viaBytes, encodeModel(reference)), `${label}: same bytes as the message-built model (first difference at ${firstDifference(viaBytes, encodeModel(reference))})`);
  }
  // Unedited, a non-ASCII name read from bytes comes back byte for byte.
  const renamed = decodeModel(bytes);
  pick(renamed).name = 'Knoten_ü_嵌入';
  const once = encodeModel(renamed);
  assert.ok(sameBytes(encodeModel(decodeModel(once)), once));
});

test('copying unedited node runs from the source bytes gives the same file as encoding every node', () => {
  const sources: Array<[string, Uint8Array]> = Object.entries(builders).map(([k, b]) => [k, encodeModel(b())]);
  if (existsSync(fixturesDir)) for (const name of fixtureNames()) sources.push([name, readFixture(name)]);
  let patchedSources = 0;
  const edits: Record<string, (m: Model) => void> = {
    'nodes inserted (NEFTune patch)': (m) => { if (patchIfPossible(m, { seed: 7, allCandidates: true })) patchedSources++; },
    'first and last node edited, one removed in the middle': (m) => {
      const nodes = m.graph.nodes;
      nodes[0]!.name = 'edited_first';
      nodes[nodes.length - 1]!.proto.doc_string = 'edited last';
      const middle = nodes[Math.floor(nodes.length / 2)]!;
      if (middle.outputs.every((o) => !o || o.uses.length === 0) && !middle.outputs.some((o) => o?.isGraphOutput)) m.graph.remove(middle);
    },
  };
  for (const [name, bytes] of sources) {
    for (const [label, edit] of Object.entries(edits)) {
      const fromBytes = decodeModel(bytes);
      const fromMessages = modelFromProto(decodeModelProto(bytes));
      edit(fromBytes);
      edit(fromMessages);
      const a = encodeModel(fromBytes), b = encodeModel(fromMessages);
      assert.ok(sameBytes(a, b), `${name}, ${label}: differ at byte ${firstDifference(a, b)}`);
    }
  }
  // Each source is edited twice (from bytes, from messages). Floor: the 4 builder models and the 15
  // fixtures with a token embedding, so a patch that refuses everything cannot pass as "no edit".
  assert.equal(patchedSources / 2, Object.keys(builders).length + (existsSync(fixturesDir) ? 15 : 0));
});

test('a model split across concatenated messages decodes as protobuf merges it', () => {
  // Concatenated encodings are one merged message: repeated fields append, the graph fields merge.
  const a = encodeModel(buildTinyGpt());
  const extra = decodeModelProto(encodeModel(buildTinyBert()));
  delete (extra as { ir_version?: unknown }).ir_version;
  for (const [label, second] of [
    ['metadata only', encodeModelProto({ metadata_props: [{ key: 'k', value: 'v' }], opset_import: [{ domain: 'x', version: 1 }] } as ModelProto)],
    ['a second graph field', encodeModelProto({ graph: extra.graph } as ModelProto)],
  ] as const) {
    const bytes = new Uint8Array(a.length + second.length);
    bytes.set(a);
    bytes.set(second, a.length);
    const viaBytes = decodeModel(bytes);
    const viaMessages = modelFromProto(decodeModelProto(bytes));
    assert.equal(viaBytes.graph.nodeCount, viaMessages.graph.nodeCount, `${label}: node count`);
    assert.ok(sameBytes(encodeModel(viaBytes), encodeModel(viaMessages)), `${label}: same model`);
  }
});
