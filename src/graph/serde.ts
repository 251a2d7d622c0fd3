/**
 * ModelProto <-> IR. Decoding never needs topological order: every name defined in a graph is
 * registered before any node input is resolved, and subgraphs resolve against their own scope
 * first, then the enclosing ones. Encoding writes each object's kept proto back with the fields
 * the IR owns (names, inputs, outputs, nodes, subgraphs) filled in from the IR.
 */
import { Attribute, Graph, Model, Node, OnnxFunction, TrainingInfo, Value, bindStored, type DeclarationList } from './ir.js';
import { NODE_FIELDS_IN_IR, copyWithout, keepNodeSource, readNodeBody, unchangedSince, verbatimNode } from './node-bytes.js';
import { NodeFlag, type NodeStore } from './node-store.js';
import {
  ModelProtoType, cloneShallow,
  type AttributeProto, type FunctionProto, type GraphProto, type ModelProto, type NodeProto,
  type TensorProto, type ValueInfoProto,
} from './proto.js';
import { Tensor } from './tensor.js';
import { OnnxModelError } from './errors.js';

// ---------------------------------------------------------------- decode

/**
 * The main graph's nodes as wire byte ranges (body start, end pairs) of `bytes`, read by
 * node-bytes.ts; with `store` (node-store.ts, read from the same ranges) the graph keeps them there.
 */
export interface NodeBytes { bytes: Uint8Array; ranges: readonly number[]; store?: NodeStore }

export function modelFromProto(proto: ModelProto, graphNodes?: NodeBytes): Model {
  const graph = graphFromProto(proto.graph ?? {}, null, graphNodes);
  const model = new Model(proto, graph);
  model.functions = (proto.functions ?? []).map(functionFromProto);
  for (const f of model.functions) f.body._model = model;
  model.trainingInfo = (proto.training_info ?? []).map((t) => new TrainingInfo(
    t,
    Object.hasOwn(t, 'initialization') ? graphFromProto(t.initialization!, graph) : undefined,
    Object.hasOwn(t, 'algorithm') ? graphFromProto(t.algorithm!, graph) : undefined,
  ));
  return model;
}

function graphFromProto(proto: GraphProto, parentScope: Graph | null, nodeBytes?: NodeBytes): Graph {
  const graph = new Graph(stripGraphFields(proto));
  graph.parentScope = parentScope;
  const declare = (list: DeclarationList, info: ValueInfoProto) => {
    const name = info.name ?? '';
    let value = graph._local(name);
    if (!value) {
      // Outputs and value_info may name values of an enclosing scope (a body that passes an outer value through).
      value = (list === 'input' ? undefined : parentScope?.lookup(name)) ?? graph._register(new Value(name));
    }
    if (value.info === undefined) value.info = info;
    else if (!sameDeclaration(value.info, info)) {
      let overrides = graph.declarationOverrides.get(list);
      if (!overrides) graph.declarationOverrides.set(list, overrides = new Map());
      overrides.set(value, info);
    }
    if (list === 'value_info') graph.valueInfo.push(value); else graph._pushDecoded(list, value);
  };
  for (const info of proto.input ?? []) {
    const value = graph._register(new Value(info.name ?? ''));
    if (graph._scope.get(value.name) !== value) {
      // The same name listed twice as an input: keep both entries, sharing the first value.
      declare('input', info);
      continue;
    }
    value.info = info;
    graph._pushDecoded('input', value);
  }
  for (const tensor of proto.initializer ?? []) {
    const name = tensor.name ?? '';
    const value = graph._scope.get(name) ?? graph._register(new Value(name));
    value.initializer = new Tensor(tensor);
    graph._pushDecoded('initializer', value);
  }
  for (const sparse of proto.sparse_initializer ?? []) {
    const name = sparse.values?.name ?? '';
    const value = graph._scope.get(name) ?? graph._register(new Value(name));
    value.sparseInitializer = sparse;
    graph._pushDecoded('sparse', value);
  }
  // Every name a node defines must be known before any input is resolved. In a sorted graph an
  // input is usually defined already (first definition wins, so that is final): such nodes are
  // finished at once. From the first node that has to wait (an input defined later or outside, or
  // a subgraph), every node waits, so uses are still recorded in node order.
  const pending: { node: Node; inputs: readonly string[]; attributes: readonly AttributeProto[] }[] = [];
  const add = (outputNames: readonly string[], proto: NodeProto, inputNames: readonly string[], attributes: readonly AttributeProto[]): Node => {
    const outputs = outputNames.map((name) => (name === '' ? null : new Value(name)));
    const node = new Node(proto.op_type ?? '', [], [], { proto });
    node._adoptOutputs(outputs);
    for (const out of outputs) if (out) graph._register(out);
    if (!pending.length) {
      const inputs = resolvedLocally(graph, inputNames, attributes);
      if (inputs) {
        for (const ap of attributes) node.attributes.push(new Attribute(ap));
        if (inputs.length) node._adoptInputs(inputs);
        graph._appendDefined(node);
        return node;
      }
    }
    pending.push({ node, inputs: inputNames, attributes });
    return node;
  };
  const fromProto = (np: NodeProto): Node => {
    const node = add(np.output ?? [], stripNodeFields(np), np.input ?? [], np.attribute ?? []);
    node._decodedFrom = np;
    return node;
  };
  for (const np of proto.node ?? []) fromProto(np);
  if (nodeBytes?.store && adoptsStore(graph, nodeBytes.store)) {
    graph._adoptStore(nodeBytes.store);
  } else if (nodeBytes) {
    const { bytes, ranges } = nodeBytes;
    for (let i = 0; i < ranges.length; i += 2) {
      const from = ranges[i]!, to = ranges[i + 1]!;
      const body = readNodeBody(bytes, from, to);
      // Written back as these bytes while unchanged.
      keepNodeSource(add(body.outputs, body.proto, body.inputs, body.attributes ?? []), body, bytes, from, to);
    }
  }
  for (const info of proto.output ?? []) declare('output', info);
  for (const info of proto.value_info ?? []) declare('value_info', info);

  for (const { node, inputs, attributes } of pending) {
    for (const ap of attributes) node.attributes.push(attributeFromProto(ap, graph, node));
    if (inputs.length) node._adoptInputs(inputs.map((name) => (name === '' ? null : resolve(graph, name))));
    graph._appendDecoded(node);
  }
  return graph;
}

/**
 * Whether `graph` can keep its nodes in `store`: no node holds a subgraph, no node writes a name an
 * input or initializer has (the first definition would win), and every name a node reads is defined
 * here. If so, its inputs and initializers are tied to their stored names.
 */
function adoptsStore(graph: Graph, store: NodeStore): boolean {
  for (let k = 0; k < store.count; k++) if (store.flags[k]! & NodeFlag.Subgraph) return false;
  const outside: Value[] = [];
  const ids: number[] = [];
  for (const list of [graph._inputs, graph._initializers, graph._sparseInitializers]) {
    for (const value of list) {
      const id = store.names.find(value.name);
      if (id < 0) continue;
      if (store.producer[id]! >= 0) return false;
      outside.push(value);
      ids.push(id);
    }
  }
  const defined = new Uint8Array(store.names.count);
  for (const id of ids) defined[id] = 1;
  for (let id = 0; id < store.names.count; id++) if (store.useCount[id]! > 0 && !defined[id] && store.producer[id]! < 0) return false;
  // A name listed twice as an input shares the first value (the scope map holds that one).
  ids.forEach((id, i) => { if (!store.values[id]) bindStored(store, graph._scope.get(outside[i]!.name) ?? outside[i]!, id); });
  return true;
}

/** The inputs' values when all are already defined in `graph` itself and no attribute holds a graph. */
function resolvedLocally(graph: Graph, names: readonly string[], attributes: readonly AttributeProto[]): (Value | null)[] | undefined {
  for (const ap of attributes) if (Object.hasOwn(ap, 'g') || ap.graphs?.length) return undefined;
  const values = new Array<Value | null>(names.length);
  for (let i = 0; i < names.length; i++) {
    const name = names[i]!;
    if (name === '') { values[i] = null; continue; }
    const value = graph._scope.get(name);
    if (!value) return undefined;
    values[i] = value;
  }
  return values;
}

/** A name no scope defines (a broken or partial model) still gets one Value per scope chain. */
function resolve(graph: Graph, name: string): Value {
  const found = graph.lookup(name);
  if (found) return found;
  let root = graph;
  while (root.parentScope) root = root.parentScope;
  return root._register(new Value(name));
}

function attributeFromProto(proto: AttributeProto, graph: Graph, owner: Node): Attribute {
  const attr = new Attribute(proto);
  const subgraphs = Object.hasOwn(proto, 'g') ? [proto.g!] : proto.graphs ?? [];
  for (const gp of subgraphs) {
    const sub = graphFromProto(gp, graph);
    sub.owner = owner;
    attr.graphs.push(sub);
  }
  if (attr.graphs.length) {
    attr.holdsOneGraph = Object.hasOwn(proto, 'g');
    attr.proto = cloneShallow(proto);
    delete attr.proto.g;
    delete attr.proto.graphs;
  }
  return attr;
}

function functionFromProto(proto: FunctionProto): OnnxFunction {
  const body = new Graph({});
  for (const name of proto.input ?? []) body._pushDecoded('input', body._register(new Value(name)));
  const nodeProtos = proto.node ?? [];
  const nodes = nodeProtos.map((np) => {
    const outputs = (np.output ?? []).map((name) => (name === '' ? null : new Value(name)));
    for (const out of outputs) if (out) body._register(out);
    return new Node(np.op_type ?? '', [], outputs, { proto: stripNodeFields(np) });
  });
  nodeProtos.forEach((np, i) => {
    const node = nodes[i]!;
    for (const ap of np.attribute ?? []) node.attributes.push(attributeFromProto(ap, body, node));
    for (const name of np.input ?? []) node.appendInput(name === '' ? null : resolve(body, name));
    body._appendDecoded(node);
  });
  for (const name of proto.output ?? []) body._pushDecoded('output', resolve(body, name));
  for (const info of proto.value_info ?? []) {
    const value = resolve(body, info.name ?? '');
    value.info ??= info;
    body.valueInfo.push(value);
  }
  const kept = cloneShallow(proto);
  for (const k of ['input', 'output', 'node', 'value_info'] as const) delete kept[k];
  return new OnnxFunction(kept, body);
}

const GRAPH_FIELDS_IN_IR = new Set(['node', 'initializer', 'sparse_initializer', 'input', 'output', 'value_info']);

function stripGraphFields(proto: GraphProto): GraphProto { return copyWithout(proto, GRAPH_FIELDS_IN_IR); }
function stripNodeFields(proto: NodeProto): NodeProto { return copyWithout(proto, NODE_FIELDS_IN_IR); }

const infoType = ModelProtoType.root.lookupType('onnx.ValueInfoProto');
function sameDeclaration(a: ValueInfoProto, b: ValueInfoProto): boolean {
  const x = infoType.encode({ ...withoutName(a) }).finish();
  const y = infoType.encode({ ...withoutName(b) }).finish();
  return x.length === y.length && x.every((byte, i) => byte === y[i]);
}
function withoutName(info: ValueInfoProto): ValueInfoProto {
  const copy = cloneShallow(info);
  delete copy.name;
  return copy;
}

// ---------------------------------------------------------------- encode

/**
 * Subgraphs nested deeper than this cannot be written: each level costs three protobuf message
 * levels (graph, node, attribute), and protobuf (protobufjs and ONNX's C++ alike) stops at 100.
 * Decoding refuses such models first (wire.ts), so this only meets models built in code.
 */
export const MAX_SUBGRAPH_NESTING = 32;

/** Throws OnnxModelError when subgraphs nest deeper than MAX_SUBGRAPH_NESTING (checked without recursion). */
export function checkNesting(model: Model): void {
  const stack: { graph: Graph; depth: number }[] = [{ graph: model.graph, depth: 0 }];
  for (const f of model.functions) stack.push({ graph: f.body, depth: 0 });
  for (const t of model.trainingInfo) for (const g of [t.initialization, t.algorithm]) if (g) stack.push({ graph: g, depth: 0 });
  while (stack.length) {
    const { graph, depth } = stack.pop()!;
    for (const node of graph.findNodes({ hasSubgraphs: true })) {
      for (const sub of node.subgraphs()) {
        if (depth + 1 > MAX_SUBGRAPH_NESTING) {
          throw new OnnxModelError(`Subgraphs are nested more than ${MAX_SUBGRAPH_NESTING} levels deep (at ${node.describe()} in graph ${graph.name ?? '(unnamed)'}); ` +
            'protobuf cannot represent messages nested that deeply. Flatten the control flow before saving.');
        }
        stack.push({ graph: sub, depth: depth + 1 });
      }
    }
  }
}

/**
 * The model as a ModelProto. `mainGraphNodes: false` leaves the main graph's node list empty, for
 * the encoder that writes those nodes itself (codec.ts).
 */
export function modelToProto(model: Model, options: { mainGraphNodes?: boolean; verbatim?: boolean } = {}): ModelProto {
  checkNesting(model);
  const verbatim = options.verbatim ?? false;
  const out = cloneShallow(model.proto);
  if (Object.hasOwn(model.proto, 'graph') || model.graph.nodeCount || model.graph.inputs.length) {
    out.graph = graphToProto(model.graph, { nodes: options.mainGraphNodes ?? true, verbatim });
  }
  if (model.functions.length || Object.hasOwn(model.proto, 'functions')) out.functions = model.functions.map((f) => functionToProto(f, verbatim));
  if (model.trainingInfo.length || Object.hasOwn(model.proto, 'training_info')) {
    out.training_info = model.trainingInfo.map((t) => {
      const tp = cloneShallow(t.proto);
      if (t.initialization) tp.initialization = graphToProto(t.initialization, { verbatim }); else delete tp.initialization;
      if (t.algorithm) tp.algorithm = graphToProto(t.algorithm, { verbatim }); else delete tp.algorithm;
      return tp;
    });
  }
  return out;
}

/**
 * The graph as a GraphProto. With `verbatim`, nodes that still hold what they were read as (or
 * adopted, see Node.adoptSourceBytes) are messages protobufjs writes as those exact bytes: for
 * encoding only, since such a message has no readable fields.
 */
export function graphToProto(graph: Graph, options: { nodes?: boolean; verbatim?: boolean } = {}): GraphProto {
  const verbatim = options.verbatim ?? false;
  const out = cloneShallow(graph.proto);
  out.node = [];
  if (options.nodes ?? true) for (const node of graph) out.node.push(nodeToProto(node, { verbatim }));
  out.initializer = graph.initializers.map((v) => namedTensor(v.initializer!.proto, v.name));
  out.sparse_initializer = graph.sparseInitializers.map((v) => {
    const sparse = v.sparseInitializer!;
    if (sparse.values?.name === v.name) return sparse;
    return { ...cloneShallow(sparse), values: namedTensor(sparse.values ?? {}, v.name) };
  });
  out.input = graph.inputs.map((v) => declaration(graph, 'input', v));
  out.output = graph.outputs.map((v) => declaration(graph, 'output', v));
  out.value_info = graph.valueInfo.map((v) => declaration(graph, 'value_info', v));
  return out;
}

function namedTensor(tensor: TensorProto, name: string): TensorProto {
  if (tensor.name === name) return tensor;
  const copy = cloneShallow(tensor);
  copy.name = name;
  return copy;
}

function declaration(graph: Graph, list: DeclarationList, value: Value): ValueInfoProto {
  const info = graph.declarationOverrides.get(list)?.get(value) ?? value.info;
  if (info && info.name === value.name) return info;
  const out: ValueInfoProto = info ? cloneShallow(info) : {};
  out.name = value.name;
  return out;
}

export function nodeToProto(node: Node, options: { verbatim?: boolean } = {}): NodeProto {
  const source = node._decodedFrom;
  if (source && unchangedSince(node, source)) return options.verbatim && node._verbatim ? verbatimNode(node._verbatim) : source;
  const out = cloneShallow(node.proto);
  out.input = node.inputs.map((v) => v?.name ?? '');
  out.output = node.outputs.map((v) => v?.name ?? '');
  if (Object.hasOwn(node.proto, 'op_type') || node.opType !== '') out.op_type = node.opType;
  out.attribute = node.attributes.map((a) => attributeToProto(a, options.verbatim ?? false));
  return out;
}

function attributeToProto(attr: Attribute, verbatim: boolean): AttributeProto {
  if (!attr.graphs.length) return attr.proto;
  const out = cloneShallow(attr.proto);
  if (attr.holdsOneGraph) out.g = graphToProto(attr.graphs[0]!, { verbatim });
  else out.graphs = attr.graphs.map((g) => graphToProto(g, { verbatim }));
  return out;
}

function functionToProto(fn: OnnxFunction, verbatim: boolean): FunctionProto {
  const out = cloneShallow(fn.proto);
  out.input = fn.body.inputs.map((v) => v.name);
  out.output = fn.body.outputs.map((v) => v.name);
  out.node = [];
  for (const node of fn.body) out.node.push(nodeToProto(node, { verbatim }));
  out.value_info = fn.body.valueInfo.map((v) => declaration(fn.body, 'value_info', v));
  return out;
}
