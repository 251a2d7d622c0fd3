import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  GraphEditError, NameAllocator, Node, Value, decodeModel, decodeModelProto, encodeModel, encodeModelProto,
  isTopologicallySorted, topologicalSort, type Graph,
} from '../src/graph/index.js';
import { buildTinyGpt } from '../examples/models.js';
import { ifModel, readFixture, sameBytes, skipWithoutFixtures } from './helpers.js';


function describeUses(v: Value): string[] {
  return v.uses.map((u) => `${u.node.name}#${u.index}@${u.node.graph?.name}`);
}

test('a value knows its uses inside subgraphs that capture it, before and after a round trip', () => {
  for (const model of [ifModel(), decodeModel(encodeModel(ifModel()))]) {
    const x = model.graph.value('x')!;
    assert.deepEqual(describeUses(x), ['then_mul#0@then_branch', 'else_add#0@else_branch', 'else_add#1@else_branch']);
    const two = model.graph.value('two')!;
    assert.deepEqual(describeUses(two), ['then_mul#1@then_branch']);
    const ifNode = model.graph.first!;
    assert.equal(ifNode.opType, 'If');
    const [thenG] = ifNode.subgraphs();
    assert.equal(thenG!.owner, ifNode);
    assert.equal(thenG!.parentGraph, model.graph);
    const thenOut = thenG!.outputs[0]!;
    assert.equal(thenOut.producer?.name, 'then_mul');
    assert.equal(thenOut.graph, thenG);
    assert.equal(model.graph.value('y')!.producer, ifNode);
  }
});

test('BeamSearch decoder subgraph reads the outer-scope fp16 word table', { skip: skipWithoutFixtures }, () => {
  const model = decodeModel(readFixture('ort_tiny_gpt2_beamsearch_fp16.onnx'));
  const beam = model.graph.first!;
  assert.equal(beam.opType, 'BeamSearch');
  const decoder = beam.attribute('decoder')!.graph!;
  const outerTables = model.graph.initializers.filter((v) => v.uses.some((u) => u.node.graph === decoder));
  assert.ok(outerTables.length > 0, 'some outer initializer is read inside the decoder subgraph');
  for (const t of outerTables) {
    for (const use of t.uses) assert.equal(use.node.inputs[use.index], t, 'use list matches the node input');
  }
  const embed = [...decoder].find((n) => n.opType === 'EmbedLayerNormalization')!;
  const wordTable = embed.inputs[2]!; // input_ids, segment_ids, word_embedding, ...
  assert.equal(wordTable.graph, model.graph, 'the word table is defined in the main graph');
  assert.deepEqual(wordTable.initializer!.dims, [1000, 32]);
});

test('T5 BeamSearch: lookups inside encoder/decoder subgraphs read subgraph initializers', { skip: skipWithoutFixtures }, () => {
  const model = decodeModel(readFixture('ort_dummy_t5_beamsearch.onnx'));
  const beam = model.graph.first!;
  const gathers = [...beam.subgraphs()].flatMap((g) => [...g].filter((n) => n.opType === 'Gather'));
  const tables = gathers.map((g) => g.inputs[0]!).filter((v) => v.initializer && v.initializer.dims.length === 2);
  assert.ok(tables.length >= 2);
  for (const t of tables) assert.notEqual(t.graph, model.graph);
});

test('node lists can be edited while iterating', () => {
  const model = buildTinyGpt();
  const g = model.graph;
  const original = g.nodes;
  const visited: Node[] = [];
  let inserted = 0;
  for (const node of g) {
    visited.push(node);
    if (node.opType === 'Gather' && node.inputs[0]?.initializer) {
      // Insert an Identity after the lookup and move every consumer onto it.
      const out = node.output(0);
      const id = new Node('Identity', [out], [new Value(`${out.name}_identity`)], { name: `${node.name}_identity` });
      g.insertAfter(node, id);
      out.replaceAllUsesWith(id.output(0), { except: [id] });
      inserted++;
    }
    if (node.opType === 'Identity') {
      // Remove the node we just inserted (the loop is on it) after rewiring its readers back.
      node.output(0).replaceAllUsesWith(node.inputs[0]!);
      g.remove(node);
    }
  }
  assert.equal(inserted, 2);
  assert.equal(visited.length, original.length + inserted, 'each original node once, and the inserted nodes too');
  assert.deepEqual(g.nodes, original, 'after inserting and removing, the list is as before');
  const wte = g.value('inputs_embeds')!;
  assert.deepEqual(wte.uses.map((u) => u.node.opType), ['Add']);
  // And the model is unchanged byte for byte.
  assert.ok(sameBytes(encodeModel(model), encodeModel(buildTinyGpt())));
});

test('insertBefore, remove guards and use lists', () => {
  const model = buildTinyGpt();
  const g = model.graph;
  const add = g.nodes.find((n) => n.opType === 'Add')!;
  const lookup = g.nodes.find((n) => n.name === 'wte_lookup')!;
  assert.throws(() => g.remove(lookup), GraphEditError, 'a node whose output is read cannot be removed');
  const marker = new Node('Identity', [add.inputs[0]!], [new Value('marker')], { name: 'marker' });
  g.insertBefore(add, marker);
  assert.equal(add.prev, marker);
  assert.equal(marker.next, add);
  assert.ok(add.inputs[0]!.uses.some((u) => u.node === marker));
  g.remove(marker);
  assert.ok(!add.inputs[0]!.uses.some((u) => u.node === marker), 'removal drops the uses');
  assert.ok(marker.isRemoved);
});

const unsorted = ['ort_embed_layer_norm_format9.onnx', 'ort_bert_toy_optimized.onnx', 'ort_gpt2_past.onnx', 'genai_tiny_llama_fp16_extdata.onnx'];
for (const name of unsorted) {
  test(`topological sort of the unsorted fixture ${name}`, { skip: skipWithoutFixtures }, () => {
    const model = decodeModel(readFixture(name));
    assert.equal(isTopologicallySorted(model.graph), false, 'the fixture starts unsorted');
    const before = model.graph.nodeCount;
    topologicalSort(model.graph);
    assert.equal(model.graph.nodeCount, before);
    assert.ok(isTopologicallySorted(model.graph));
    // Stable: sorting again changes nothing, byte for byte.
    const once = encodeModel(model);
    topologicalSort(model.graph);
    assert.ok(sameBytes(encodeModel(model), once));
  });
}

test('topological sort counts subgraph captures as dependencies', () => {
  const model = ifModel();
  const g = model.graph;
  // Feed the If's captured value from a node placed after the If.
  const x = g.value('x')!;
  const relu = new Node('Relu', [x], [new Value('x_relu')], { name: 'relu' });
  g.append(relu);
  const ifNode = g.first!;
  const thenG = [...ifNode.subgraphs()][0]!;
  const mul = thenG.first!;
  mul.replaceInput(0, relu.output(0));
  assert.equal(isTopologicallySorted(g), false);
  topologicalSort(g);
  assert.deepEqual(g.nodes.map((n) => n.opType), ['Relu', 'If']);
});

test('topological sort reports cycles', () => {
  const model = buildTinyGpt();
  const g: Graph = model.graph;
  const add = g.nodes.find((n) => n.opType === 'Add')!;
  const ln = g.nodes.find((n) => n.opType === 'LayerNormalization')!;
  add.replaceInput(1, ln.output(0));
  assert.throws(() => topologicalSort(g), /cycle/);
});

test('fresh names are unique across every scope', () => {
  const model = ifModel();
  const names = new NameAllocator(model);
  // 'then_out' exists only inside a subgraph; 'x' in the main graph.
  assert.equal(names.fresh('then_out'), 'then_out_1');
  assert.equal(names.fresh('x'), 'x_1');
  assert.equal(names.fresh('x'), 'x_2');
  assert.equal(names.fresh('then_mul'), 'then_mul_1', 'node names count too');
  assert.equal(names.fresh('brand_new'), 'brand_new');
  assert.equal(names.fresh('brand_new'), 'brand_new_1');
});

test('local functions and training info round-trip, with their graphs in the IR', () => {
  const base = decodeModelProto(encodeModel(buildTinyGpt()));
  base.functions = [{
    name: 'ScaledAdd', domain: 'custom', input: ['a', 'b'], output: ['y'], attribute: ['alpha'],
    opset_import: [{ domain: '', version: 17 }],
    node: [
      { input: ['a', 'b'], output: ['s'], op_type: 'Add', name: 'f_add' },
      { input: ['s', 's'], output: ['y'], op_type: 'Mul', name: 'f_mul' },
    ],
  }];
  base.training_info = [{
    algorithm: { name: 'algo', node: [{ input: ['transformer.wte.weight'], output: ['wte_next'], op_type: 'Identity', name: 'step' }] },
    update_binding: [{ key: 'transformer.wte.weight', value: 'wte_next' }],
  }];
  const bytes = encodeModelProto(base);
  const model = decodeModel(bytes);
  assert.ok(sameBytes(encodeModel(model), bytes));
  const fn = model.functions[0]!;
  assert.equal(fn.name, 'ScaledAdd');
  const s = fn.body.value('s')!;
  assert.deepEqual(s.uses.map((u) => `${u.node.name}#${u.index}`), ['f_mul#0', 'f_mul#1']);
  assert.deepEqual(fn.body.inputs.map((v) => v.name), ['a', 'b']);
  // The training algorithm reads the main graph's initializer: one Value, uses across graphs.
  const wte = model.graph.initializer('transformer.wte.weight')!;
  assert.ok(wte.uses.some((u) => u.node.name === 'step'));
  // Editing a function body is reflected on encode.
  fn.body.value('s')!.name = 's_renamed';
  const again = decodeModelProto(encodeModel(model));
  assert.deepEqual(again.functions![0]!.node![1]!.input, ['s_renamed', 's_renamed']);
});

test('renaming a value keeps scopes in step and renames every reference on encode', () => {
  const model = ifModel();
  const x = model.graph.value('x')!;
  x.name = 'x_input';
  assert.equal(model.graph.value('x'), undefined);
  assert.equal(model.graph.value('x_input'), x);
  const proto = decodeModelProto(encodeModel(model));
  assert.equal(proto.graph!.input![0]!.name, 'x_input');
  const thenBranch = proto.graph!.node![0]!.attribute!.find((a) => a.name === 'then_branch')!.g!;
  assert.deepEqual(thenBranch.node![0]!.input, ['x_input', 'two'], 'captures inside subgraphs follow the rename');
});
