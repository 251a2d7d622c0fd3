/**
 * Builds models in code, in the spirit of onnx.helper: typed attributes, initializers from typed
 * arrays, inputs and outputs with symbolic dims, subgraphs that capture outer values.
 */
import { DataType, parseDataType } from './dtype.js';
import { GraphEditError } from './errors.js';
import { Attribute, AttributeType, Graph, Model, Node, Value, type Dim } from './ir.js';
import type { AttributeProto, TypeProto } from './proto.js';
import { Tensor, type TensorData } from './tensor.js';
import { NameSet } from './names.js';

const encoder = new TextEncoder();

/** An attribute value with its ONNX type spelled out (numbers alone cannot say INT or FLOAT). */
export type TypedAttribute = { readonly kind: 'FLOAT' | 'INT' | 'STRING' | 'FLOATS' | 'INTS' | 'STRINGS' | 'TENSOR' | 'GRAPH' | 'GRAPHS'; readonly value: unknown };

export const attr = {
  float: (value: number): TypedAttribute => ({ kind: 'FLOAT', value }),
  int: (value: number | bigint): TypedAttribute => ({ kind: 'INT', value }),
  string: (value: string): TypedAttribute => ({ kind: 'STRING', value }),
  floats: (value: readonly number[]): TypedAttribute => ({ kind: 'FLOATS', value }),
  ints: (value: readonly (number | bigint)[]): TypedAttribute => ({ kind: 'INTS', value }),
  strings: (value: readonly string[]): TypedAttribute => ({ kind: 'STRINGS', value }),
  tensor: (value: Tensor): TypedAttribute => ({ kind: 'TENSOR', value }),
  graph: (value: Graph | GraphBuilder): TypedAttribute => ({ kind: 'GRAPH', value }),
  graphs: (value: readonly (Graph | GraphBuilder)[]): TypedAttribute => ({ kind: 'GRAPHS', value }),
};

/** Plain values are typed the obvious way: integer -> INT, other number -> FLOAT, string -> STRING, ... */
export type AttributeInput = TypedAttribute | number | bigint | string | Tensor | Graph | GraphBuilder | readonly number[] | readonly string[];

const int64 = (v: number | bigint): number | string => (typeof v === 'bigint' ? v.toString() : v);

export function makeAttribute(name: string, input: AttributeInput): Attribute {
  const typed = toTyped(input);
  const proto: AttributeProto = { name, type: AttributeType[typed.kind] };
  const graphs: Graph[] = [];
  const v = typed.value;
  switch (typed.kind) {
    case 'FLOAT': proto.f = v as number; break;
    case 'INT': proto.i = int64(v as number) as number; break;
    case 'STRING': proto.s = encoder.encode(v as string); break;
    case 'FLOATS': proto.floats = [...(v as number[])]; break;
    case 'INTS': proto.ints = (v as (number | bigint)[]).map(int64) as number[]; break;
    case 'STRINGS': proto.strings = (v as string[]).map((s) => encoder.encode(s)); break;
    case 'TENSOR': proto.t = (v as Tensor).proto; break;
    case 'GRAPH': graphs.push(asGraph(v as Graph | GraphBuilder)); break;
    case 'GRAPHS': for (const g of v as (Graph | GraphBuilder)[]) graphs.push(asGraph(g)); break;
  }
  const attribute = new Attribute(proto);
  attribute.graphs = graphs;
  attribute.holdsOneGraph = typed.kind === 'GRAPH';
  return attribute;
}

function asGraph(g: Graph | GraphBuilder): Graph { return g instanceof GraphBuilder ? g.graph : g; }

function toTyped(input: AttributeInput): TypedAttribute {
  if (typeof input === 'object' && input !== null && 'kind' in input && 'value' in input) return input as TypedAttribute;
  if (typeof input === 'number') return Number.isInteger(input) ? attr.int(input) : attr.float(input);
  if (typeof input === 'bigint') return attr.int(input);
  if (typeof input === 'string') return attr.string(input);
  if (input instanceof Tensor) return attr.tensor(input);
  if (input instanceof Graph || input instanceof GraphBuilder) return attr.graph(input);
  const isNumber = (x: unknown) => typeof x === 'number' || typeof x === 'bigint';
  if (!Array.isArray(input) || !(input.every((x) => typeof x === 'string') || input.every(isNumber))) {
    const what = input === undefined || input === null ? String(input) : Array.isArray(input) ? 'a list that is neither all numbers nor all strings' : `a ${typeof input}`;
    throw new GraphEditError(`An attribute value must be a number, bigint, string, Tensor, Graph, a list of numbers or of strings, or attr.*(...), not ${what}`);
  }
  const list = input as readonly (number | string)[];
  if (list.every((x) => typeof x === 'string')) return attr.strings(list as string[]);
  return (list as number[]).every(Number.isInteger) ? attr.ints(list as number[]) : attr.floats(list as number[]);
}

/** A tensor TypeProto with the given element type and dims (omit dims for unknown rank). */
export function tensorType(elemType: DataType | string, dims?: readonly Dim[]): TypeProto {
  const type: TypeProto = { tensor_type: { elem_type: parseDataType(elemType) } };
  if (dims) {
    type.tensor_type!.shape = {
      dim: dims.map((d) => (typeof d === 'number' ? { dim_value: d } : typeof d === 'string' ? { dim_param: d } : {})),
    };
  }
  return type;
}

export interface NodeOptions {
  name?: string;
  domain?: string;
  /** Output names; by default fresh names derived from the op type. */
  outputs?: readonly string[];
  /** Number of outputs when names are not given (default 1). */
  outputCount?: number;
}

export class GraphBuilder {
  readonly graph: Graph;
  /** @internal */
  private readonly names: NameSet;
  constructor(names: NameSet, graph?: Graph) {
    this.names = names;
    this.graph = graph ?? new Graph({});
  }

  input(name: string, elemType: DataType | string, dims?: readonly Dim[]): Value {
    const value = new Value(this.names.claim(name));
    value.info = { name, type: tensorType(elemType, dims) };
    return this.graph.addInput(value);
  }

  /** An initializer; with `asInput`, also a graph input (as in training artifacts). */
  initializer(name: string, tensor: Tensor, options: { asInput?: boolean } = {}): Value {
    const value = new Value(this.names.claim(name));
    tensor.proto.name = name;
    if (options.asInput) {
      value.info = { name, type: tensorType(tensor.dataType, tensor.dims) };
      this.graph.addInput(value);
    }
    return this.graph.addInitializer(value, tensor);
  }

  /** A float32/int64/... initializer straight from data. */
  constant(name: string, dataType: DataType | string, dims: readonly number[], data: TensorData | readonly number[]): Value {
    return this.initializer(name, Tensor.fromArray(dataType, dims, data, name));
  }

  /** Adds a node and returns its outputs. */
  node(opType: string, inputs: readonly (Value | null)[], attributes: Record<string, AttributeInput> = {}, options: NodeOptions = {}): Value[] {
    const count = options.outputs?.length ?? options.outputCount ?? 1;
    const outputs = Array.from({ length: count }, (_, i) =>
      new Value(options.outputs?.[i] !== undefined ? this.names.claim(options.outputs[i]!) : this.names.fresh(`${opType.toLowerCase()}_out`)));
    const node = new Node(opType, inputs, outputs, {
      ...(options.domain !== undefined ? { domain: options.domain } : {}),
      name: options.name ?? this.names.fresh(opType),
      attributes: Object.entries(attributes).map(([k, v]) => makeAttribute(k, v)),
    });
    this.graph.append(node);
    return outputs;
  }

  /** Adds a single-output node and returns that output. */
  op(opType: string, inputs: readonly (Value | null)[], attributes: Record<string, AttributeInput> = {}, options: NodeOptions = {}): Value {
    return this.node(opType, inputs, attributes, options)[0]!;
  }

  output(value: Value, elemType?: DataType | string, dims?: readonly Dim[]): Value {
    if (elemType !== undefined) value.info = { name: value.name, type: tensorType(elemType, dims) };
    else value.info ??= { name: value.name };
    return this.graph.addOutput(value);
  }

  /** A body graph for If/Loop/Scan; values of this graph used inside it become captures. */
  subgraph(name: string): GraphBuilder {
    const sub = new GraphBuilder(this.names, new Graph({ name }));
    sub.graph.parentScope = this.graph;
    return sub;
  }
}

export interface ModelOptions {
  /** Default-domain opset (required: the builder never picks one silently). */
  opset: number;
  irVersion: number;
  /** Further domains, e.g. `{ 'com.microsoft': 1 }`. */
  opsets?: Record<string, number>;
  graphName?: string;
  producerName?: string;
  producerVersion?: string;
}

export class ModelBuilder extends GraphBuilder {
  /** @internal */
  private readonly options: ModelOptions;
  constructor(options: ModelOptions) {
    super(new NameSet(), new Graph({ name: options.graphName ?? 'main' }));
    this.options = options;
  }

  build(): Model {
    const o = this.options;
    const model = new Model({
      ir_version: o.irVersion,
      opset_import: [{ domain: '', version: o.opset }, ...Object.entries(o.opsets ?? {}).map(([domain, version]) => ({ domain, version }))],
      producer_name: o.producerName ?? 'onnx-neftune',
      ...(o.producerVersion !== undefined ? { producer_version: o.producerVersion } : {}),
    }, this.graph);
    for (const g of model.allGraphs()) {
      for (const node of g) for (const a of node.attributes) for (const sub of a.graphs) { sub.owner = node; sub.parentScope = g; }
    }
    return model;
  }
}
