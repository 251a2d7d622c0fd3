/**
 * The graph API keeps its own bookkeeping (scopes, producers, uses, input and output lists, the
 * node list) consistent on ordinary mistakes, and refuses what it cannot keep consistent with
 * GraphEditError instead of corrupting it silently. One test (or more) per hazard.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, readdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import * as graphApi from '../src/graph/index.js';
import {
  DataType, GraphEditError, ModelBuilder, Node, Tensor, Value, attr, decodeModel, decodeModelProto, encodeModel, topologicalSort, tensorType,
  type Graph, type Model,
} from '../src/graph/index.js';
import { deferredPayloadOf } from '../src/graph/deferred.js';
import { readModelFile } from '../src/io/index.js';
import { buildTinyGpt } from '../examples/models.js';
import { tempDir } from './cli-helpers.js';
import { ifModel, projectRoot, sameBytes } from './helpers.js';


const nodeNamed = (g: Graph, name: string) => g.nodes.find((n) => n.name === name)!;
const thenBranch = (m: Model) => m.graph.first!.subgraphs()[0]!;

/** Runs `edit`, which must throw GraphEditError matching `message`, and checks the model still encodes to `before`. */
function refusedUnchanged(model: Model, edit: () => void, message: RegExp, what: string): void {
  const before = encodeModel(model);
  assert.throws(edit, (e: Error) => e instanceof GraphEditError && message.test(e.message), what);
  assert.ok(sameBytes(encodeModel(model), before), `${what}: the refused edit changed the model`);
}

// ---------------------------------------------------------------- renaming

test('renaming a value onto a taken name throws GraphEditError naming both, and changes nothing', () => {
  const model = buildTinyGpt();
  const g = model.graph;
  const emb = g.value('inputs_embeds')!;
  refusedUnchanged(model, () => { emb.name = 'position_embeds'; }, /"inputs_embeds" to "position_embeds".*value "position_embeds" \(output of Gather "wpe_lookup"/, 'onto a node output');
  refusedUnchanged(model, () => { emb.name = 'input_ids'; }, /"input_ids".*a graph input/, 'onto a graph input');
  refusedUnchanged(model, () => { emb.name = 'transformer.wte.weight'; }, /an initializer/, 'onto an initializer');
  assert.equal(emb.name, 'inputs_embeds');
  assert.equal(g.value('inputs_embeds'), emb, 'the value is still in its scope');
  assert.equal(g.value('position_embeds')!.producer!.name, 'wpe_lookup');
  // Renaming to a free name and back still works, and the scope follows.
  emb.name = 'tok';
  assert.equal(g.value('tok'), emb);
  assert.equal(g.value('inputs_embeds'), undefined);
  emb.name = 'inputs_embeds';
  assert.equal(g.value('inputs_embeds'), emb);
});

test('renaming across scopes: a subgraph value onto an outer name, or an outer value onto a subgraph name, is refused', () => {
  const model = ifModel();
  const thenOut = thenBranch(model).value('then_out')!;
  refusedUnchanged(model, () => { thenOut.name = 'x'; }, /"then_out" to "x".*graph input/, 'shadowing an outer value');
  const x = model.graph.value('x')!;
  refusedUnchanged(model, () => { x.name = 'else_out'; }, /"x" to "else_out".*Add "else_add" in graph "else_branch"/, 'clashing with a nested scope');
  // Sibling branches are separate scopes: then_out may take else_out's name.
  thenOut.name = 'else_out';
  assert.equal(thenBranch(model).value('else_out'), thenOut);
});

// ---------------------------------------------------------------- one producer per name

test('a second producer of a name is refused: append, insertBefore, replaceOutput, appendOutput', () => {
  const model = buildTinyGpt();
  const g = model.graph;
  const lookup = nodeNamed(g, 'wte_lookup');
  const emb = lookup.output(0);
  refusedUnchanged(model, () => g.append(new Node('Identity', [emb], [new Value('position_embeds')], { name: 'dup' })),
    /Identity "dup" cannot write "position_embeds".*Gather "wpe_lookup"/, 'append');
  refusedUnchanged(model, () => g.insertBefore(lookup, new Node('Identity', [emb], [new Value('logits')], { name: 'dup2' })),
    /cannot write "logits"/, 'insertBefore');
  refusedUnchanged(model, () => lookup.replaceOutput(0, new Value('logits')), /Gather "wte_lookup" cannot write "logits"/, 'replaceOutput');
  const split = new Node('Split', [emb], [new Value('split_a')], { name: 'split' });
  g.insertAfter(lookup, split);
  const before = encodeModel(model);
  assert.throws(() => split.appendOutput(new Value('input_ids')), /cannot write "input_ids".*graph input/);
  assert.equal(split.outputs.length, 1, 'appendOutput refused before changing the node');
  assert.ok(sameBytes(encodeModel(model), before));
  // Also within a subgraph, against its own and the outer names.
  const m2 = ifModel();
  const then = thenBranch(m2);
  const thenOut = then.value('then_out')!;
  refusedUnchanged(m2, () => then.append(new Node('Neg', [thenOut], [new Value('then_out')], { name: 'neg' })), /cannot write "then_out"/, 'subgraph: own name');
  refusedUnchanged(m2, () => then.append(new Node('Neg', [thenOut], [new Value('y')], { name: 'neg' })), /cannot write "y".*If/, 'subgraph: outer name');
});

test('graph inputs and initializers under a taken name are refused', () => {
  const model = buildTinyGpt();
  const g = model.graph;
  refusedUnchanged(model, () => g.addInput(new Value('inputs_embeds')), /Cannot add "inputs_embeds".*Gather "wte_lookup"/, 'addInput');
  refusedUnchanged(model, () => g.addInitializer(new Value('input_ids'), Tensor.fromArray('int64', [1], [0])), /"input_ids".*graph input/, 'addInitializer');
  refusedUnchanged(model, () => g.addInput(g.value('inputs_embeds')!), /written by Gather "wte_lookup"/, 'a node output as input');
  refusedUnchanged(model, () => g.addInput(g.value('input_ids')!), /already an input/, 'an input twice');
  // A free name is fine, and an initializer may also be an input (as in training graphs).
  const lr = g.addInitializer(new Value('lr'), Tensor.fromArray('float', [], [0.1]));
  g.addInput(lr);
  assert.equal(g.value('lr'), lr);
});

// ---------------------------------------------------------------- uses

test('value.uses is a snapshot: rewiring every use in a loop over it skips none', () => {
  const b = new ModelBuilder({ opset: 17, irVersion: 8 });
  const x = b.input('x', 'float', [2]);
  const z = b.input('z', 'float', [2]);
  const outs = [0, 1, 2, 3].map((i) => b.op('Add', [x, x], {}, { name: `add${i}`, outputs: [`s${i}`] }));
  for (const o of outs) b.output(o, 'float', [2]);
  const model = b.build();
  const uses = x.uses;
  assert.equal(uses.length, 8);
  for (const use of x.uses) use.node.replaceInput(use.index, z);
  assert.equal(x.uses.length, 0, 'every use moved');
  assert.equal(z.uses.length, 8);
  assert.equal(uses.length, 8, 'the snapshot taken before is unchanged');
  assert.ok(Object.isFrozen(uses));
  assert.notEqual(z.uses, z.uses, 'a fresh array each time');
  assert.equal(z.useCount, 8);
  assert.equal(z.hasUses, true);
  assert.equal(x.hasUses, false);
  assert.deepEqual(decodeModelProto(encodeModel(model)).graph!.node!.map((n) => n.input), [0, 1, 2, 3].map(() => ['z', 'z']));
});

test('replaceAllUsesWith refuses a graph output unless replaceGraphOutputs, which rewires the output too', () => {
  const model = buildTinyGpt();
  const g = model.graph;
  const logits = g.value('logits')!;
  const id = new Node('Identity', [logits], [new Value('logits_copy')], { name: 'copy' });
  g.append(id);
  refusedUnchanged(model, () => logits.replaceAllUsesWith(id.output(0), { except: [id] }), /logits: it is an output of graph "tiny_gpt".*replaceGraphOutputs/, 'plain call');
  logits.replaceAllUsesWith(id.output(0), { except: [id], replaceGraphOutputs: true });
  assert.deepEqual(g.outputs.map((v) => v.name), ['logits_copy']);
  assert.equal(id.input(0), logits, 'the excepted node still reads the old value');
  const proto = decodeModelProto(encodeModel(model)).graph!;
  assert.deepEqual(proto.output!.map((o) => o.name), ['logits_copy']);
  // A value that is no graph output is rewired as before.
  const emb = g.value('inputs_embeds')!;
  const id2 = new Node('Identity', [emb], [new Value('emb_copy')], { name: 'copy2' });
  g.insertAfter(emb.producer!, id2);
  emb.replaceAllUsesWith(id2.output(0), { except: [id2] });
  assert.deepEqual(emb.uses.map((u) => u.node.name), ['copy2']);
});

// ---------------------------------------------------------------- input and output lists

test('graph inputs and outputs are read-only snapshots, edited through methods that keep the scope in step', () => {
  const model = buildTinyGpt();
  const g = model.graph;
  const inputs = g.inputs;
  assert.ok(Object.isFrozen(inputs) && Object.isFrozen(g.outputs) && Object.isFrozen(g.initializers));
  assert.throws(() => (inputs as unknown as Value[]).push(new Value('sneaky')), TypeError);
  const extra = g.insertInput(0, new Value('extra'));
  assert.deepEqual(g.inputs.map((v) => v.name), ['extra', 'input_ids']);
  assert.deepEqual(inputs.map((v) => v.name), ['input_ids'], 'an earlier snapshot does not change');
  assert.equal(g.value('extra'), extra);
  const ids = g.value('input_ids')!;
  refusedUnchanged(model, () => g.removeInput(ids), /Cannot remove input input_ids.*read by/, 'removing a read input');
  assert.equal(g.removeInput(extra), extra);
  assert.equal(g.value('extra'), undefined, 'a removed input leaves the scope');
  assert.ok(!extra.isGraphInput);
  // The deprecated array edits keep the scope in step too (before, the name stayed defined).
  g.addInput(new Value('old_style'));
  const removed = g.inputs.splice(g.inputs.findIndex((v) => v.name === 'old_style'), 1);
  assert.deepEqual(removed.map((v) => v.name), ['old_style']);
  assert.equal(g.value('old_style'), undefined);
  g.addInput(new Value('old_style'));
  assert.equal(g.value('old_style')!.isGraphInput, true, 'the name is free again');
  // Outputs: only values defined here (or in an enclosing scope), once.
  refusedUnchanged(model, () => g.addOutput(new Value('nowhere')), /not defined there/, 'an undefined value');
  refusedUnchanged(model, () => g.addOutput(g.value('logits')!), /already an output/, 'an output twice');
  const emb = g.addOutput(g.value('inputs_embeds')!);
  assert.equal(emb.isGraphOutput, true);
  assert.equal(g.removeOutput(emb), emb);
  assert.deepEqual(g.outputs.map((v) => v.name), ['logits']);
});

// ---------------------------------------------------------------- iteration

/** Loops over `g` (at most `cap` steps, so a looping iterator fails instead of hanging), calling `step` on each node. */
function walk(g: Graph, step: (n: Node) => void, cap = 1000): string[] {
  const seen: string[] = [];
  for (const n of g) {
    seen.push(n.name!);
    if (seen.length > cap) break;
    step(n);
  }
  return seen;
}

test('iteration: moving the current node to the end visits every node once and ends', { timeout: 10_000 }, () => {
  const model = buildTinyGpt();
  const g = model.graph;
  const original = g.nodes.map((n) => n.name!);
  const seen = walk(g, (n) => { if (n.opType !== 'MatMul') { g.remove(n, { force: true }); g.append(n); } });
  assert.deepEqual([...seen].sort(), [...original].sort(), 'each node once');
  assert.equal(g.nodeCount, original.length);
});

test('iteration: moving the current node earlier, or removing it and the next node, neither revisits nor skips', { timeout: 10_000 }, () => {
  const model = buildTinyGpt();
  const g = model.graph;
  const original = g.nodes.map((n) => n.name!);
  const add = g.nodes.find((n) => n.opType === 'Add')!;
  const seen = walk(g, (n) => { if (n === add) { g.remove(n, { force: true }); g.prepend(n); } });
  assert.deepEqual(seen, original, 'moved to the front: visited once, the rest in order');

  const m2 = buildTinyGpt();
  const g2 = m2.graph;
  const names = g2.nodes.map((n) => n.name!);
  const target = g2.nodes[2]!;
  const following = target.next!;
  const seen2 = walk(g2, (n) => { if (n === target) { g2.remove(following, { force: true }); g2.remove(n, { force: true }); } });
  assert.deepEqual(seen2, names.filter((name) => name !== following.name));
});

test('iteration: the current node moved to another graph, and back', { timeout: 10_000 }, () => {
  const model = buildTinyGpt();
  const g = model.graph;
  const other = ifModel().graph;
  const original = g.nodes.map((n) => n.name!);
  const moved: Node[] = [];
  const seen = walk(g, (n) => { if (n.opType === 'Cast' || n.opType === 'Gather') { g.remove(n, { force: true }); other.append(n); moved.push(n); } });
  assert.deepEqual(seen, original);
  assert.equal(g.nodeCount + moved.length, original.length);
  // Moved back to the end of the list being walked: still visited only once.
  const m2 = buildTinyGpt();
  const g2 = m2.graph;
  const names2 = g2.nodes.map((n) => n.name!);
  const away = ifModel().graph;
  const seen2 = walk(g2, (n) => { if (n.opType === 'Gather') { g2.remove(n, { force: true }); away.append(n); away.remove(n, { force: true }); g2.append(n); } });
  assert.deepEqual([...seen2].sort(), [...names2].sort());
});

test('iteration: topologicalSort during the loop is refused with GraphEditError', () => {
  const model = buildTinyGpt();
  const g = model.graph;
  const last = g.last!;
  g.remove(last, { force: true });
  g.prepend(last); // now unsorted
  assert.throws(() => { for (const n of g) { void n; topologicalSort(g); } }, (e: Error) => e instanceof GraphEditError && /reordered/.test(e.message));
});

// ---------------------------------------------------------------- clone

test('Model.clone is deep: editing the clone leaves the original as it was, and both encode as they should', () => {
  const bytes = encodeModel(buildTinyGpt());
  const original = decodeModel(bytes);
  const copy = original.clone();
  assert.ok(sameBytes(encodeModel(copy), bytes), 'an unedited clone encodes to the same bytes');
  const edit = (m: Model) => {
    const g = m.graph;
    g.value('inputs_embeds')!.name = 'tok';
    const lookup = g.nodes.find((n) => n.isOp('Gather'))!;
    const id = Node.create('Identity', [lookup.output(0)], ['tok_id'], { name: 'id' });
    g.insertAfter(lookup, id);
    lookup.output(0).replaceAllUsesWith(id.output(0), { except: [id] });
    g.addInput(new Value('extra'));
    m.metadata.set('edited', 'yes');
    m.addOpsetImport('com.microsoft', 1);
    thenOrNothing(m);
  };
  edit(copy);
  assert.ok(sameBytes(encodeModel(original), bytes), 'the original still encodes to its bytes');
  assert.equal(original.graph.value('tok'), undefined);
  assert.equal(original.metadata.get('edited'), undefined);
  assert.equal(original.opsetVersion('com.microsoft'), undefined);
  const expected = decodeModel(bytes);
  edit(expected);
  assert.ok(sameBytes(encodeModel(copy), encodeModel(expected)), 'the clone encodes like a fresh decode with the same edit');
  // Cloned IR objects are distinct, and the clone's bookkeeping is its own.
  assert.notEqual(copy.graph.value('input_ids'), original.graph.value('input_ids'));
  assert.equal(original.graph.value('inputs_embeds')!.useCount, 1);
  assert.equal(copy.graph.value('tok')!.useCount, 1);
});

/** Tensor metadata is copied: renaming a tensor proto in one model does not show in the other. */
function thenOrNothing(m: Model): void {
  m.graph.initializer('transformer.wpe.weight')!.initializer!.proto.doc_string = 'edited';
}

test('Model.clone keeps subgraph captures and lazily read payloads lazy and shared', () => {
  const model = ifModel();
  const copy = model.clone();
  const x = copy.graph.value('x')!;
  assert.deepEqual(x.uses.map((u) => `${u.node.name}@${u.node.graph!.name}`), ['then_mul@then_branch', 'else_add@else_branch', 'else_add@else_branch']);
  assert.equal(thenBranch(copy).parentScope, copy.graph);
  assert.ok(sameBytes(encodeModel(copy), encodeModel(model)));

  const dir = tempDir('graph-api-clone');
  const file = path.join(dir, 'gpt.onnx');
  writeFileSync(file, encodeModel(buildTinyGpt({ vocab: 4096, dim: 64 })));
  const loaded = readModelFile(file, { deferThreshold: 1024 });
  const lazyCopy = loaded.model.clone();
  const payload = (m: Model) => deferredPayloadOf(m.graph.initializer('transformer.wte.weight')!.initializer!.proto.raw_data);
  assert.ok(payload(loaded.model), 'the table was read lazily');
  assert.equal(payload(lazyCopy), payload(loaded.model), 'the clone refers to the same deferred payload');
});

// ---------------------------------------------------------------- isOp, Node.create, naming

test('node.isOp treats "" and "ai.onnx" as the same domain', () => {
  const g = buildTinyGpt().graph;
  const gather = g.nodes.find((n) => n.opType === 'Gather')!;
  assert.ok(gather.isOp('Gather'));
  assert.ok(gather.isOp('Gather', 'ai.onnx'));
  assert.ok(!gather.isOp('Gather', 'com.microsoft'));
  assert.ok(!gather.isOp('Add'));
  gather.domain = 'ai.onnx';
  assert.ok(gather.isOp('Gather') && gather.isOp('Gather', ''));
});

test('Node.create takes attributes as a record; unnamed nodes and values are named by the model on insertion', () => {
  const model = buildTinyGpt();
  const g = model.graph;
  const emb = g.value('inputs_embeds')!;
  // A name the model uses already, for a value, makes the fresh names step past it.
  g.insertAfter(emb.producer!, Node.create('Identity', [emb], ['Identity_output'], { name: 'Identity' }));
  const node = Node.create('LeakyRelu', [emb], 1, { attributes: { alpha: attr.float(1), note: 'x', axes: [0, 1] } });
  assert.equal(node.output(0).name, '', 'unnamed until inserted');
  assert.equal(node.attribute('alpha')!.kind, 'FLOAT');
  assert.equal(node.attribute('axes')!.kind, 'INTS');
  assert.equal(node.attribute('note')!.kind, 'STRING');
  assert.equal(Node.create('X', [], 1, { attributes: { alpha: 1.0 } }).attribute('alpha')!.kind, 'INT', 'the documented trap: 1.0 is an integer');
  g.insertAfter(emb.producer!, node);
  assert.equal(node.name, 'LeakyRelu');
  assert.equal(node.output(0).name, 'LeakyRelu_output');
  assert.equal(g.value('LeakyRelu_output'), node.output(0));
  const second = Node.create('Identity', [emb]);
  g.append(second);
  assert.equal(second.name, 'Identity_1', 'a taken node name is not reused');
  assert.equal(second.output(0).name, 'Identity_output_1');
  // A given name is never changed: a taken one is refused.
  refusedUnchanged(model, () => g.append(Node.create('Relu', [emb], ['logits'])), /cannot write "logits"/, 'a taken output name');
  const decoded = decodeModelProto(encodeModel(model)).graph!.node!;
  assert.ok(decoded.some((n) => n.name === 'LeakyRelu' && n.output![0] === 'LeakyRelu_output'));
});

test('the user script: find Gathers, insert an Identity after one, rename values, save, decode', () => {
  const model = decodeModel(encodeModel(buildTinyGpt()));
  const g = model.graph;
  const gathers = g.nodes.filter((n) => n.isOp('Gather') && n.input(0)?.initializer);
  assert.equal(gathers.length, 2);
  const lookup = gathers[0]!;
  const id = Node.create('Identity', [lookup.output(0)], 1);
  g.insertAfter(lookup, id);
  lookup.output(0).replaceAllUsesWith(id.output(0), { except: [id] });
  assert.throws(() => { id.output(0).name = 'position_embeds'; }, GraphEditError, 'renaming onto a taken name');
  id.output(0).name = 'tokens_after_identity';
  const again = decodeModel(encodeModel(model));
  const copy = again.graph.value('tokens_after_identity')!;
  assert.equal(copy.producer!.opType, 'Identity');
  assert.ok(copy.hasUses, 'the readers of the lookup now read the Identity');
  assert.deepEqual(again.graph.value('inputs_embeds')!.uses.map((u) => u.node.opType), ['Identity']);
  assert.equal(again.graph.value('position_embeds')!.producer!.name, 'wpe_lookup', 'the other lookup kept its output');
});

// ---------------------------------------------------------------- package surface

test('published graph types show no internals (stripInternal)', () => {
  const dir = path.join(projectRoot, 'dist', 'src', 'graph');
  const leaks: string[] = [];
  for (const file of readdirSync(dir).filter((f) => f.endsWith('.d.ts'))) {
    const text = readFileSync(path.join(dir, file), 'utf8');
    for (const [i, line] of text.split('\n').entries()) {
      if (/^\s+(?:private |protected |readonly |static )*_[A-Za-z]\w*[?!]?[(:;]/.test(line) || /^\s+private /.test(line)) leaks.push(`${file}:${i + 1}: ${line.trim()}`);
    }
  }
  assert.deepEqual(leaks, []);
  const ir = readFileSync(path.join(dir, 'ir.d.ts'), 'utf8');
  for (const name of ['_srcBytes', '_prev', '_next', '_addUse', '_removeUse', 'useStore', 'sentinel']) assert.ok(!ir.includes(name), `${name} is published`);
});

test('the graph entry exports what a graph tool needs and no wire internals', () => {
  const exported = new Set(Object.keys(graphApi));
  for (const name of ['decodeModel', 'encodeModel', 'decodeModelProto', 'encodeModelProto', 'Model', 'Graph', 'Node', 'Value', 'Attribute', 'Tensor',
    'ModelBuilder', 'attr', 'makeAttribute', 'tensorType', 'DataType', 'dataTypeName', 'GraphEditError', 'OnnxDecodeError', 'OnnxModelError',
    'OnnxNeftuneError', 'topologicalSort', 'isTopologicallySorted', 'NameAllocator', 'extractSlice', 'externalizeInitializers', 'int64ToNumber']) {
    assert.ok(exported.has(name), `${name} is exported`);
  }
  for (const name of ['encodeVarint', 'PLACEHOLDER_LENGTH', 'coalesce', 'joinPieces', 'fieldsAsPieces', 'placeholderFor', 'deferredPayloadOf',
    'encodeProtoPieces', 'onnxRoot', 'ModelProtoType', 'GraphProtoType', 'NodeProtoType', 'AttributeProtoType', 'decodeKeepingUnknowns', 'cloneShallow']) {
    assert.ok(!exported.has(name), `${name} is not exported`);
  }
});

test('setAttribute and removeAttribute change a node read from bytes, and the change reaches the file', () => {
  const model = decodeModel(encodeModel(buildTinyGpt()));
  const lookup = model.graph.nodes.find((n) => n.name === 'wte_lookup')!;
  lookup.setAttribute('axis', 1);
  assert.equal(decodeModel(encodeModel(model)).graph.nodes.find((n) => n.name === 'wte_lookup')!.attributeValue('axis', 0), 1);
  assert.equal(lookup.removeAttribute('axis'), true);
  assert.equal(lookup.removeAttribute('axis'), false);
  assert.equal(decodeModel(encodeModel(model)).graph.nodes.find((n) => n.name === 'wte_lookup')!.attribute('axis'), undefined);
});

test('Tensor.toArray of a model decoded from a Node Buffer gives the tensor, not the whole buffer', () => {
  const model = buildTinyGpt();
  const bytes = Buffer.from(graphApi.encodeModel(model)); // a Buffer view, as readFileSync returns
  const decoded = graphApi.decodeModel(bytes);
  for (const v of decoded.graph.initializers) {
    const t = v.initializer!;
    const array = t.toArray();
    const count = t.dims.reduce((a, d) => a * d, 1);
    assert.equal(array.length, count, `${v.name}: ${array.length} elements for dims [${t.dims}]`);
    assert.deepEqual(new Uint8Array(array.buffer), new Uint8Array(t.rawBytes()), v.name);
  }
});

// ---------------------------------------------------------------- misuse gets a typed error (user trial)

test('misuse is refused with GraphEditError saying what to do, and numpy dtype names work', () => {
  const model = decodeModel(encodeModel(buildTinyGpt()));
  const g = model.graph;
  assert.equal(g.findNodes().length, g.nodeCount, 'findNodes() with no filter lists every node');
  const refused = (f: () => unknown, pattern: RegExp) => assert.throws(f, (e: Error) => e instanceof GraphEditError && pattern.test(e.message));
  const ids = g.inputs[0]!.name;
  refused(() => Node.create('Identity', [ids as unknown as Value]), /must be a Value.*graph\.value\("input_ids"\)/);
  const gather = g.findNodes({ opType: 'Gather' })[0]!;
  refused(() => gather.replaceInput(1, undefined as unknown as Value), /must be a Value .*not undefined/);
  refused(() => gather.setAttribute('axis', {} as never), /attribute value must be .* not a object/);
  refused(() => gather.setAttribute('axis', [1, 'a'] as never), /neither all numbers nor all strings/);
  refused(() => model.names.claim(gather.name!), /already used.*fresh/);
  refused(() => tensorType('float33'), /Unknown ONNX data type "float33": use one of float, uint8/);
  assert.equal(Tensor.fromArray('float32', [2], [1, 2]).dataType, DataType.FLOAT);
  assert.equal(Tensor.fromArray('float64', [1], [1]).dataType, DataType.DOUBLE);
  assert.ok(sameBytes(encodeModel(model), encodeModel(decodeModel(encodeModel(buildTinyGpt())))), 'refused edits changed nothing');
});

test('initializerToInput gives the new input the tensor\'s type and shape (ONNX inputs are typed)', () => {
  const model = decodeModel(encodeModel(buildTinyGpt()));
  const table = model.graph.findNodes({ opType: 'Gather' }).map((n) => n.input(0)!).find((v) => v.initializer)!;
  const dims = table.initializer!.dims;
  model.graph.initializerToInput(table);
  assert.equal(table.elemType, DataType.FLOAT);
  assert.deepEqual(table.shape, dims);
  const again = decodeModel(encodeModel(model));
  assert.deepEqual(again.graph.value(table.name)!.shape, dims, 'the type is saved');
});
