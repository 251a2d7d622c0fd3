/**
 * Extracts the part of a graph that computes some of its values: the nodes they depend on, and
 * at the boundary the graph inputs, initializers and outer-scope values those nodes read. The
 * result is a standalone Model whose outputs are the requested values. Works for values inside
 * subgraphs too (their captures become inputs or copied initializers).
 */
import type { Graph, Model, Node, Value } from './ir.js';
import { cloneShallow, type GraphProto, type ModelProto, type TensorProto, type ValueInfoProto } from './proto.js';
import { modelFromProto, nodeToProto } from './serde.js';

export interface SliceOptions {
  /** Boundary values to turn into graph inputs even when they are initializers (e.g. a table whose data is missing). */
  asInputs?: (value: Value) => boolean;
}

export function extractSlice(model: Model, graph: Graph, outputs: readonly Value[], options: SliceOptions = {}): Model {
  const needed = new Set<Node>();
  const boundary = new Set<Value>();
  const stack: Value[] = [...outputs];
  while (stack.length) {
    const value = stack.pop()!;
    const producer = value.producer;
    if (producer && producer.graph === graph) {
      if (needed.has(producer)) continue;
      needed.add(producer);
      for (const v of readsOf(producer)) stack.push(v);
    } else {
      boundary.add(value);
    }
  }
  const order = graph.nodes.filter((n) => needed.has(n));
  const proto: GraphProto = { name: `${graph.name ?? 'graph'}_slice`, node: order.map((n) => nodeToProto(n)), initializer: [], input: [], output: [] };
  for (const value of boundary) {
    const tensor = initializerOf(value);
    if (tensor && !options.asInputs?.(value)) {
      proto.initializer!.push(tensor.name === value.name ? tensor : { ...cloneShallow(tensor), name: value.name });
      continue;
    }
    proto.input!.push(declaration(value));
  }
  proto.output = outputs.map(declaration);
  const modelProto: ModelProto = { ...cloneShallow(model.proto), graph: proto };
  delete modelProto.training_info;
  return modelFromProto(modelProto);
}

/** Values a node reads, including values captured inside its subgraphs from enclosing scopes. */
function* readsOf(node: Node): Iterable<Value> {
  for (const v of node.inputs) if (v) yield v;
  for (const sub of node.subgraphs()) {
    for (const inner of sub.allNodes()) {
      for (const v of inner.inputs) if (v && !definedWithin(v, sub)) yield v;
    }
  }
}

function definedWithin(value: Value, root: Graph): boolean {
  for (let g = value.graph; g; g = g.parentGraph) if (g === root) return true;
  return false;
}

function initializerOf(value: Value): TensorProto | undefined {
  return value.initializer?.proto;
}

function declaration(value: Value): ValueInfoProto {
  const info: ValueInfoProto = value.info ? cloneShallow(value.info) : {};
  info.name = value.name;
  if (!info.type && value.initializer) {
    info.type = { tensor_type: { elem_type: value.initializer.dataType, shape: { dim: value.initializer.dims.map((d) => ({ dim_value: d })) } } };
  }
  return info;
}
