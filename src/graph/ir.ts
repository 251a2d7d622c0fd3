/**
 * The graph IR: values know their producer and their ordered uses; node lists are linked lists
 * that stay valid while a pass edits them; subgraph nodes hold the same Value objects as the
 * outer graph, so an outer value's uses include its consumers inside If/Loop/Scan bodies.
 *
 * Every IR object keeps the protobuf message it came from (`proto`) for the fields the IR does
 * not model, so encoding an unedited model reproduces its bytes.
 */
import { DataType } from './dtype.js';
import { GraphEditError, OnnxModelError } from './errors.js';
import { adoptNodeBytes, nodeSourceBytes } from './node-bytes.js';
import {
  int64ToNumber,
  type AttributeProto, type FunctionProto, type GraphProto, type ModelProto, type NodeProto,
  type OperatorSetIdProto, type SparseTensorProto, type StringStringEntryProto, type TrainingInfoProto,
  type TypeProto, type ValueInfoProto,
} from './proto.js';
import { Tensor } from './tensor.js';

/** One use of a value: input number `index` of `node`. */
export interface Use { readonly node: Node; readonly index: number }

/** A symbolic or fixed dimension: a number, a name, or undefined when unknown. */
export type Dim = number | string | undefined;

const NO_USES: readonly Use[] = Object.freeze([]);

export class Value {
  /** The node that writes this value and which of its outputs it is; null for inputs and initializers. */
  producer: Node | null = null;
  producerIndex = -1;
  /** Uses: none, the only one, or a list from the second on (most values have one use; this saves a list per value). */
  private useStore: Use | Use[] | undefined;
  /** The ValueInfoProto this value was declared with (its name field is ignored: `name` rules). */
  info: ValueInfoProto | undefined;
  /** Set when the value is an initializer of `graph`. */
  initializer: Tensor | undefined;
  /** Set when the value is a sparse initializer of `graph`. */
  sparseInitializer: SparseTensorProto | undefined;

  private currentName: string;

  constructor(name: string, public graph: Graph | null = null) {
    this.currentName = name;
  }

  /** The value's name. Renaming keeps the defining graph's scope in step; names are never changed silently. */
  get name(): string { return this.currentName; }
  set name(name: string) {
    const scope = this.graph?.scope;
    if (scope?.get(this.currentName) === this) {
      scope.delete(this.currentName);
      if (!scope.has(name)) scope.set(name, this);
    }
    this.currentName = name;
  }

  /** Uses in insertion order, including nodes in subgraphs that capture this value. */
  get uses(): readonly Use[] {
    const store = this.useStore;
    return store === undefined ? NO_USES : Array.isArray(store) ? store : [store];
  }

  /** @internal Only Node changes use lists, so they never drift from the nodes. */
  _addUse(node: Node, index: number): void {
    const use = { node, index };
    const store = this.useStore;
    if (store === undefined) this.useStore = use;
    else if (Array.isArray(store)) store.push(use);
    else this.useStore = [store, use];
  }
  /** @internal */
  _removeUse(node: Node, index: number): void {
    const store = this.useStore;
    if (store === undefined) return;
    if (!Array.isArray(store)) {
      if (store.node === node && store.index === index) this.useStore = undefined;
      return;
    }
    const i = store.findIndex((u) => u.node === node && u.index === index);
    if (i >= 0) store.splice(i, 1);
  }

  get type(): TypeProto | undefined { return this.info?.type; }
  set type(type: TypeProto | undefined) {
    this.info = { ...(this.info ?? {}), ...(type ? { type } : {}) };
    if (!type) delete this.info.type;
  }
  get elemType(): DataType | undefined {
    return this.type?.tensor_type?.elem_type ?? undefined;
  }
  /** Dims from the declared tensor type; undefined when the rank is unknown. */
  get shape(): Dim[] | undefined {
    const shape = this.type?.tensor_type?.shape;
    if (!shape) return undefined;
    return (shape.dim ?? []).map((d) =>
      Object.hasOwn(d, 'dim_value') ? int64ToNumber(d.dim_value) : Object.hasOwn(d, 'dim_param') ? d.dim_param : undefined);
  }

  get isGraphInput(): boolean { return !!this.graph?.inputs.includes(this); }
  get isGraphOutput(): boolean { return !!this.graph?.outputs.includes(this); }

  /** Distinct nodes that read this value (including nodes inside subgraphs). */
  consumers(): Node[] { return [...new Set(this.uses.map((u) => u.node))]; }

  /**
   * Points every reader of this value at `other` instead, except the nodes in `except` (typically
   * the node that computes `other` from this value). Graph outputs are left alone.
   */
  replaceAllUsesWith(other: Value, options: { except?: readonly Node[] } = {}): void {
    const except = new Set(options.except ?? []);
    for (const use of [...this.uses]) if (!except.has(use.node)) use.node.replaceInput(use.index, other);
  }

  toString(): string { return `%${this.name}`; }
}

export type AttributeKind =
  | 'UNDEFINED' | 'FLOAT' | 'INT' | 'STRING' | 'TENSOR' | 'GRAPH' | 'SPARSE_TENSOR' | 'TYPE_PROTO'
  | 'FLOATS' | 'INTS' | 'STRINGS' | 'TENSORS' | 'GRAPHS' | 'SPARSE_TENSORS' | 'TYPE_PROTOS';

export const AttributeType: Record<AttributeKind, number> = {
  UNDEFINED: 0, FLOAT: 1, INT: 2, STRING: 3, TENSOR: 4, GRAPH: 5, SPARSE_TENSOR: 11, TYPE_PROTO: 13,
  FLOATS: 6, INTS: 7, STRINGS: 8, TENSORS: 9, GRAPHS: 10, SPARSE_TENSORS: 12, TYPE_PROTOS: 14,
};
const ATTRIBUTE_KIND_BY_NUMBER = new Map(Object.entries(AttributeType).map(([k, v]) => [v, k as AttributeKind]));

// Invalid UTF-8 becomes U+FFFD (as protobufjs reads names); the bytes stay in the proto.
const textDecoder = new TextDecoder();

/** The JS sort of value an attribute kind gives (for attributeValue's check against a fallback). */
function valueSort(kind: AttributeKind): string {
  switch (kind) {
    case 'FLOAT': case 'INT': return 'number';
    case 'STRING': return 'string';
    case 'FLOATS': case 'INTS': case 'STRINGS': case 'TENSORS': case 'GRAPHS': return 'list';
    default: return 'other';
  }
}

/**
 * The type number as written. protobufjs keeps a type number it does not know (a closed proto2
 * enum) among the unknown fields, so a decoded attribute may hold it there.
 */
function declaredType(p: AttributeProto): number | undefined {
  const type = own(p, 'type');
  if (type !== undefined || !p.$unknowns) return type;
  for (const raw of p.$unknowns) {
    // Each entry is one whole field: tag 20 with wire type 0 is the two bytes 0xa0 0x01, then a varint.
    if (raw.length < 3 || raw[0] !== 0xa0 || raw[1] !== 0x01) continue;
    let value = 0, scale = 1;
    for (let i = 2; i < raw.length && i < 12; i++) {
      value += (raw[i]! & 0x7f) * scale;
      if (raw[i]! < 0x80) return value;
      scale *= 128;
    }
  }
  return undefined;
}

/** A decoded message's own field (protobufjs messages show defaults through their prototype). */
function own<K extends keyof AttributeProto>(p: AttributeProto, key: K): AttributeProto[K] | undefined {
  return Object.hasOwn(p, key) ? p[key] : undefined;
}

export class Attribute {
  /** Subgraphs of GRAPH / GRAPHS attributes, as IR graphs (their protos are rebuilt on encode). */
  graphs: Graph[] = [];
  /** For graph attributes: whether the graph sits in `g` (GRAPH) rather than `graphs` (GRAPHS). */
  holdsOneGraph = false;

  constructor(public proto: AttributeProto) {}

  get name(): string { return this.proto.name ?? ''; }
  /** The declared type (or, for an attribute without one, the type its value field implies); UNDEFINED for an unknown type number. */
  get kind(): AttributeKind {
    const declared = declaredType(this.proto);
    if (declared !== undefined && declared !== 0) return ATTRIBUTE_KIND_BY_NUMBER.get(declared) ?? 'UNDEFINED';
    if (this.graphs.length) return this.holdsOneGraph ? 'GRAPH' : 'GRAPHS';
    return inferAttributeKind(this.proto);
  }
  /** Reference to an attribute of the enclosing function (`ref_attr_name`), if any. */
  get refAttrName(): string | undefined { return this.proto.ref_attr_name || undefined; }

  get graph(): Graph | undefined { return this.kind === 'GRAPH' ? this.graphs[0] : undefined; }

  /** The kind for messages: the declared type number too when it is not one ONNX defines. */
  get kindLabel(): string {
    const declared = declaredType(this.proto);
    return declared !== undefined && declared !== 0 && !ATTRIBUTE_KIND_BY_NUMBER.has(declared) ? `of unknown type ${declared}` : this.kind;
  }

  /**
   * The value as plain JS: numbers, strings (UTF-8 decoded), Tensors, Graphs or arrays of those.
   * It follows the declared type; when the matching field is absent (a STRING without `s`, INTS
   * without `ints`) the value is the type's empty value, as protobuf reads an absent field: 0, '',
   * [], or undefined for TENSOR, GRAPH, SPARSE_TENSOR and TYPE_PROTO. An unknown type gives undefined.
   * Fields of other types are ignored here and kept for encoding.
   */
  get value(): unknown {
    const p = this.proto;
    switch (this.kind) {
      case 'FLOAT': return own(p, 'f') ?? 0;
      case 'INT': return int64ToNumber(own(p, 'i'));
      case 'STRING': { const s = own(p, 's'); return s instanceof Uint8Array ? textDecoder.decode(s) : ''; }
      case 'TENSOR': { const t = own(p, 't'); return t ? new Tensor(t) : undefined; }
      case 'GRAPH': return this.graphs[0];
      case 'FLOATS': return [...(own(p, 'floats') ?? [])];
      case 'INTS': return (own(p, 'ints') ?? []).map(int64ToNumber);
      case 'STRINGS': return (own(p, 'strings') ?? []).map((s) => textDecoder.decode(s));
      case 'TENSORS': return (own(p, 'tensors') ?? []).map((t) => new Tensor(t));
      case 'GRAPHS': return [...this.graphs];
      case 'SPARSE_TENSOR': return own(p, 'sparse_tensor') ?? undefined;
      case 'SPARSE_TENSORS': return own(p, 'sparse_tensors') ?? [];
      case 'TYPE_PROTO': return own(p, 'tp') ?? undefined;
      case 'TYPE_PROTOS': return own(p, 'type_protos') ?? [];
      default: return undefined;
    }
  }
}

function inferAttributeKind(p: AttributeProto): AttributeKind {
  const has = (k: keyof AttributeProto) => Object.hasOwn(p, k);
  if (has('f')) return 'FLOAT';
  if (has('i')) return 'INT';
  if (has('s')) return 'STRING';
  if (has('t')) return 'TENSOR';
  if (has('g')) return 'GRAPH';
  if (has('sparse_tensor')) return 'SPARSE_TENSOR';
  if (has('tp')) return 'TYPE_PROTO';
  if (p.floats?.length) return 'FLOATS';
  if (p.ints?.length) return 'INTS';
  if (p.strings?.length) return 'STRINGS';
  if (p.tensors?.length) return 'TENSORS';
  if (p.graphs?.length) return 'GRAPHS';
  if (p.sparse_tensors?.length) return 'SPARSE_TENSORS';
  if (p.type_protos?.length) return 'TYPE_PROTOS';
  return 'UNDEFINED';
}

const NO_GRAPHS: readonly Graph[] = Object.freeze([]);

export class Node {
  /** Set while the node is in a graph. */
  graph: Graph | null = null;
  /** @internal linked-list links; kept on removal so iteration can step past a removed node. */
  _prev: Node | null = null;
  /** @internal */
  _next: Node | null = null;
  /** @internal */
  _removed = false;

  private inputList: (Value | null)[] = [];
  private outputList: (Value | null)[] = [];
  readonly attributes: Attribute[] = [];

  /** The NodeProto for the fields the IR does not model (doc_string, metadata, device configs, unknowns). */
  proto: NodeProto;
  /** @internal The message this node was decoded from; encoding reuses it while the node is unchanged. */
  _decodedFrom: NodeProto | undefined;
  /** @internal The wire bytes this node was read from (node-bytes.ts); written back while unedited. */
  _srcBytes: Uint8Array | undefined;
  /** @internal */
  _srcStart = 0;
  /** @internal */
  _srcEnd = 0;
  /** @internal The attribute messages read from `_srcBytes`. */
  _srcAttributes: AttributeProto[] | undefined;
  /** @internal NodeProto bytes written as they are while the node still equals `_decodedFrom`. */
  _verbatim: Uint8Array | undefined;

  constructor(
    public opType: string,
    inputs: readonly (Value | null)[] = [],
    outputs: readonly (Value | null)[] = [],
    options: { domain?: string; name?: string; attributes?: Attribute[]; proto?: NodeProto } = {},
  ) {
    this.proto = options.proto ?? {};
    if (options.domain !== undefined) this.proto.domain = options.domain;
    if (options.name !== undefined) this.proto.name = options.name;
    if (inputs.length) this._adoptInputs(inputs.slice());
    if (outputs.length) this._adoptOutputs(outputs.slice()); // exact size, see _addUse
    if (options.attributes) for (const a of options.attributes) this.attributes.push(a);
    for (const a of this.attributes) for (const g of a.graphs) g.owner = this;
  }

  /** Node name; undefined when the file has none. */
  get name(): string | undefined { return Object.hasOwn(this.proto, 'name') ? this.proto.name : undefined; }
  set name(name: string | undefined) {
    if (name === undefined) delete this.proto.name; else this.proto.name = name;
  }
  /** Operator domain; '' (or absent) is the default ONNX domain. */
  get domain(): string { return this.proto.domain ?? ''; }
  set domain(domain: string) { this.proto.domain = domain; }

  get inputs(): readonly (Value | null)[] { return this.inputList; }
  get outputs(): readonly (Value | null)[] { return this.outputList; }

  input(i: number): Value | null { return this.inputList[i] ?? null; }
  output(i: number): Value {
    const v = this.outputList[i];
    if (!v) throw new GraphEditError(`Node ${this.describe()} has no output #${i}`);
    return v;
  }

  attribute(name: string): Attribute | undefined { return this.attributes.find((a) => a.name === name); }
  /**
   * The attribute's value (see Attribute.value), or `fallback` when the node has no such attribute.
   * With a fallback, the attribute must hold the same sort of value (a number for a number, a
   * string for a string, a list for a list): otherwise OnnxModelError names the node and the
   * attribute, instead of handing a string to code that expects a number.
   */
  attributeValue<T = unknown>(name: string, fallback?: T): T {
    const a = this.attribute(name);
    if (!a) return fallback as T;
    if (fallback !== undefined && fallback !== null) {
      const sort = valueSort(a.kind);
      const wanted = Array.isArray(fallback) ? 'list' : typeof fallback;
      if ((wanted === 'number' || wanted === 'string' || wanted === 'list') && sort !== wanted) {
        throw new OnnxModelError(`Node ${this.describe()}: attribute "${name}" is ${a.kindLabel}, expected ${wanted === 'list' ? 'a list' : `a ${wanted}`}; fix the model (e.g. re-export it)`);
      }
    }
    return a.value as T;
  }

  /** Subgraphs held in this node's attributes. */
  subgraphs(): readonly Graph[] {
    let found: Graph[] | undefined;
    for (const a of this.attributes) for (const g of a.graphs) (found ??= []).push(g);
    return found ?? NO_GRAPHS;
  }

  /**
   * The NodeProto bytes this node is written as, when it is byte-backed (read from bytes, or given
   * them with adoptSourceBytes) and still holds exactly what they say; undefined otherwise.
   */
  sourceBytes(): Uint8Array | undefined { return nodeSourceBytes(this); }

  /**
   * Gives the node the NodeProto bytes it had before an edit (from sourceBytes()). When they decode
   * to exactly what the node holds now (op type, domain, name, inputs, outputs, attributes and every
   * other field), the encoder writes them as they are and this returns true; otherwise nothing
   * changes and it returns false. Nodes holding subgraphs are always encoded from the IR (false).
   */
  adoptSourceBytes(bytes: Uint8Array): boolean { return adoptNodeBytes(this, bytes); }

  /** @internal Sets the inputs of a node that has none yet, keeping `values` as the list (sized exactly). */
  _adoptInputs(values: (Value | null)[]): void {
    if (this.inputList.length) throw new GraphEditError(`Node ${this.describe()} already has inputs`);
    this.inputList = values;
    if (this.attached) for (let i = 0; i < values.length; i++) values[i]?._addUse(this, i);
  }

  appendInput(value: Value | null): void {
    this.inputList.push(value);
    if (this.attached) value?._addUse(this, this.inputList.length - 1);
  }

  /** Points input `index` at `value`; use lists on both sides stay exact. */
  replaceInput(index: number, value: Value | null): void {
    if (index < 0 || index >= this.inputList.length) {
      throw new GraphEditError(`Node ${this.describe()} has no input #${index}`);
    }
    const old = this.inputList[index];
    if (old === value) return;
    if (this.attached) old?._removeUse(this, index);
    this.inputList[index] = value;
    if (this.attached) value?._addUse(this, index);
  }

  /** @internal Sets the outputs of a node that has none yet, keeping `values` as the list. */
  _adoptOutputs(values: (Value | null)[]): void {
    if (this.outputList.length) throw new GraphEditError(`Node ${this.describe()} already has outputs`);
    values.forEach((value, i) => {
      if (!value) return;
      if (value.producer && !value.producer.isRemoved) throw new GraphEditError(`Value ${value.name} already has producer ${value.producer.describe()}`);
      value.producer = this;
      value.producerIndex = i;
    });
    this.outputList = values;
  }

  appendOutput(value: Value | null): void {
    if (value) {
      if (value.producer && !value.producer.isRemoved) throw new GraphEditError(`Value ${value.name} already has producer ${value.producer.describe()}`);
      value.producer = this;
      value.producerIndex = this.outputList.length;
    }
    this.outputList.push(value);
  }

  /**
   * Makes this node write `value` at output `index` instead of what it wrote before. `value` must
   * have no producer, or one that was removed from its graph.
   */
  replaceOutput(index: number, value: Value): void {
    const old = this.outputList[index];
    if (old === value) return;
    const current = value.producer;
    if (current && current !== this && !current.isRemoved) {
      throw new GraphEditError(`Value ${value.name} already has producer ${current.describe()}`);
    }
    if (old) {
      old.producer = null;
      old.producerIndex = -1;
      if (this.graph?.scope.get(old.name) === old) this.graph.scope.delete(old.name);
    }
    value.producer = this;
    value.producerIndex = index;
    this.outputList[index] = value;
    if (this.graph) {
      value.graph = this.graph;
      this.graph.scope.set(value.name, value);
    }
  }

  /** @internal Whether this node's inputs are counted in their values' use lists. */
  private attached = true;
  /** @internal Drops this node's uses (on removal from a graph). */
  _detachInputs(): void {
    if (!this.attached) return;
    this.inputList.forEach((v, i) => v?._removeUse(this, i));
    this.attached = false;
  }
  /** @internal Restores this node's uses (on re-insertion). */
  _attachInputs(): void {
    if (this.attached) return;
    this.inputList.forEach((v, i) => v?._addUse(this, i));
    this.attached = true;
  }

  get isRemoved(): boolean { return this._removed; }
  get next(): Node | null { return this._next && this._next.graph ? this._next : null; }
  get prev(): Node | null { return this._prev && this._prev.graph ? this._prev : null; }

  /** "Gather 'embed' (domain '')" style description for messages. */
  describe(): string {
    const dom = this.domain ? `${this.domain}::` : '';
    return `${dom}${this.opType}${this.name !== undefined ? ` "${this.name}"` : ''}`;
  }
}

/** A graph declaration list a value can appear in. */
export type DeclarationList = 'input' | 'output' | 'value_info';

export class Graph {
  readonly inputs: Value[] = [];
  readonly outputs: Value[] = [];
  /** Declared intermediate values (value_info), in file order. */
  readonly valueInfo: Value[] = [];
  /** Initializers in file order. */
  readonly initializers: Value[] = [];
  readonly sparseInitializers: Value[] = [];
  /** The node whose attribute holds this graph (null for a top-level graph). */
  owner: Node | null = null;
  /** The scope names resolve against after this graph's own (set for subgraphs and training graphs). */
  parentScope: Graph | null = null;
  /** Value names defined in this graph (inputs, initializers, node outputs). */
  readonly scope = new Map<string, Value>();
  /**
   * Declarations that differ from the value's primary one (a value listed both as an output and
   * in value_info with other details). Kept so the round trip is exact.
   */
  readonly declarationOverrides = new Map<DeclarationList, Map<Value, ValueInfoProto>>();
  proto: GraphProto;

  private readonly sentinel: Node;
  private count = 0;

  constructor(proto: GraphProto = {}) {
    this.proto = proto;
    this.sentinel = new Node('<sentinel>');
    this.sentinel._next = this.sentinel;
    this.sentinel._prev = this.sentinel;
  }

  get name(): string | undefined { return this.proto.name; }
  set name(name: string | undefined) { if (name === undefined) delete this.proto.name; else this.proto.name = name; }

  get nodeCount(): number { return this.count; }

  /** Nodes in list order. Safe while the loop removes the current node or inserts after it. */
  [Symbol.iterator](): Iterator<Node> { return new NodeIterator(this.sentinel); }
  get nodes(): Node[] { return [...this]; }
  get first(): Node | null { return this.sentinel._next === this.sentinel ? null : this.sentinel._next; }
  get last(): Node | null { return this.sentinel._prev === this.sentinel ? null : this.sentinel._prev; }

  append(node: Node): Node { return this.linkAfter(this.sentinel._prev!, node); }
  prepend(node: Node): Node { return this.linkAfter(this.sentinel, node); }
  insertAfter(anchor: Node, node: Node): Node { this.checkMember(anchor); return this.linkAfter(anchor, node); }
  insertBefore(anchor: Node, node: Node): Node { this.checkMember(anchor); return this.linkAfter(anchor._prev!, node); }

  /**
   * Takes `node` out of the list and drops its input uses. Refused while another node or a graph
   * output still reads one of its outputs, unless `force`.
   */
  remove(node: Node, options: { force?: boolean } = {}): void {
    this.checkMember(node);
    if (!options.force) {
      for (const out of node.outputs) {
        if (!out) continue;
        const reader = out.uses.find((u) => u.node !== node);
        if (reader) throw new GraphEditError(`Cannot remove ${node.describe()}: its output ${out.name} is read by ${reader.node.describe()}`);
        if (out.graph?.outputs.includes(out)) throw new GraphEditError(`Cannot remove ${node.describe()}: its output ${out.name} is a graph output`);
      }
    }
    node._detachInputs();
    node._prev!._next = node._next;
    node._next!._prev = node._prev;
    node._removed = true;
    node.graph = null;
    this.count--;
    for (const out of node.outputs) if (out && this.scope.get(out.name) === out) this.scope.delete(out.name);
  }

  private checkMember(node: Node): void {
    if (node.graph !== this) throw new GraphEditError(`Node ${node.describe()} is not in graph ${this.name ?? '(unnamed)'}`);
  }

  /** Links `node` into the list after `anchor`. */
  private splice(anchor: Node, node: Node): void {
    node._prev = anchor;
    node._next = anchor._next;
    anchor._next!._prev = node;
    anchor._next = node;
    node._removed = false;
    node.graph = this;
    this.count++;
  }

  private linkAfter(anchor: Node, node: Node): Node {
    if (node.graph) throw new GraphEditError(`Node ${node.describe()} is already in a graph; remove it first`);
    this.splice(anchor, node);
    node._attachInputs();
    for (const out of node.outputs) {
      if (!out) continue;
      out.graph = this;
      if (!this.scope.has(out.name)) this.scope.set(out.name, out);
    }
    return node;
  }

  /** @internal Appends a node being decoded, whose outputs are already defined here (no scope work). */
  _appendDefined(node: Node): void { this.splice(this.sentinel._prev!, node); }

  /** Looks a name up in this graph, then in enclosing scopes. */
  lookup(name: string): Value | undefined {
    for (let g: Graph | null = this; g; g = g.parentScope) {
      const v = g.scope.get(name);
      if (v) return v;
    }
    return undefined;
  }

  /** Registers a value defined in this graph (inputs, initializers). */
  define(value: Value): Value {
    value.graph = this;
    if (!this.scope.has(value.name)) this.scope.set(value.name, value);
    return value;
  }

  addInput(value: Value): Value { this.define(value); this.inputs.push(value); return value; }
  addOutput(value: Value): Value { this.outputs.push(value); return value; }
  addInitializer(value: Value, tensor: Tensor): Value {
    value.initializer = tensor;
    this.define(value);
    this.initializers.push(value);
    return value;
  }
  initializer(name: string): Value | undefined { return this.initializers.find((v) => v.name === name); }
  /** Removes an initializer (and its graph-input entry, if any). Refused while it is still read. */
  removeInitializer(value: Value): void {
    if (value.uses.length) throw new GraphEditError(`Initializer ${value.name} is still read by ${value.uses[0]!.node.describe()}`);
    const i = this.initializers.indexOf(value);
    if (i >= 0) this.initializers.splice(i, 1);
    value.initializer = undefined;
    if (this.scope.get(value.name) === value && !this.inputs.includes(value)) this.scope.delete(value.name);
  }

  /** The graph that contains this one (through the owner node), if any. */
  get parentGraph(): Graph | null { return this.owner?.graph ?? null; }

  /** Every node in this graph and all nested subgraphs, depth first (no recursion: nesting may be deep). */
  *allNodes(): Iterable<Node> {
    const stack: Iterator<Node>[] = [this[Symbol.iterator]()];
    while (stack.length) {
      const step = stack[stack.length - 1]!.next();
      if (step.done) { stack.pop(); continue; }
      yield step.value;
      const subs = step.value.subgraphs();
      for (let i = subs.length - 1; i >= 0; i--) stack.push(subs[i]![Symbol.iterator]());
    }
  }

  /** A value produced by some node of this graph, or defined here, by name. */
  value(name: string): Value | undefined { return this.scope.get(name); }
}

/**
 * Walks a node list. The next node is found only when asked for, from the links of the node
 * returned last, so a loop may remove that node or insert after it. (A class rather than a
 * generator: three to four times faster over a million nodes.)
 */
class NodeIterator implements Iterator<Node> {
  private current: Node;
  constructor(private readonly sentinel: Node) { this.current = sentinel; }
  next(): IteratorResult<Node> {
    let node = this.current._next!;
    while (node._removed) node = node._next!;
    if (node === this.sentinel) return { done: true, value: undefined };
    this.current = node;
    return { done: false, value: node };
  }
  [Symbol.iterator](): Iterator<Node> { return this; }
}

export class OnnxFunction {
  /** Inputs, outputs and nodes live in a Graph; FunctionProto has no types for its inputs. */
  readonly body: Graph;
  constructor(public proto: FunctionProto, body: Graph) { this.body = body; }
  get name(): string { return this.proto.name ?? ''; }
  get domain(): string { return this.proto.domain ?? ''; }
  get overload(): string { return this.proto.overload ?? ''; }
}

export class TrainingInfo {
  constructor(public proto: TrainingInfoProto, public initialization: Graph | undefined, public algorithm: Graph | undefined) {}
}

/** Key/value metadata entries (model, graph, node, value or function metadata_props), in order. */
export class Metadata {
  constructor(private readonly holder: { metadata_props?: StringStringEntryProto[] }) {}
  private get list(): StringStringEntryProto[] {
    if (!Object.hasOwn(this.holder, 'metadata_props')) this.holder.metadata_props = [];
    return this.holder.metadata_props!;
  }
  get entries(): Array<{ key: string; value: string }> {
    return (this.holder.metadata_props ?? []).map((e) => ({ key: e.key ?? '', value: e.value ?? '' }));
  }
  get(key: string): string | undefined { return this.holder.metadata_props?.find((e) => e.key === key)?.value; }
  /** Replaces the entry in place if present, else appends it. */
  set(key: string, value: string): void {
    const found = this.list.find((e) => e.key === key);
    if (found) found.value = value; else this.list.push({ key, value });
  }
  delete(key: string): boolean {
    const list = this.holder.metadata_props;
    const i = list?.findIndex((e) => e.key === key) ?? -1;
    if (i < 0) return false;
    list!.splice(i, 1);
    if (list!.length === 0) delete this.holder.metadata_props;
    return true;
  }
}

export class Model {
  functions: OnnxFunction[] = [];
  trainingInfo: TrainingInfo[] = [];
  readonly metadata: Metadata;

  constructor(public proto: ModelProto, public graph: Graph) {
    this.metadata = new Metadata(proto);
  }

  get irVersion(): number { return int64ToNumber(this.proto.ir_version); }
  get producerName(): string { return this.proto.producer_name ?? ''; }

  get opsetImports(): ReadonlyArray<{ domain: string; version: number }> {
    return (this.proto.opset_import ?? []).map((o) => ({ domain: o.domain ?? '', version: int64ToNumber(o.version) }));
  }
  /** The imported version of `domain` ('' and 'ai.onnx' are the default domain); undefined if not imported. */
  opsetVersion(domain = ''): number | undefined {
    const d = domain === 'ai.onnx' ? '' : domain;
    const found = (this.proto.opset_import ?? []).find((o) => ((o.domain ?? '') === 'ai.onnx' ? '' : o.domain ?? '') === d);
    return found ? int64ToNumber(found.version) : undefined;
  }
  /** Adds an opset import; refuses to change an existing one (tools must not bump a model's opset). */
  addOpsetImport(domain: string, version: number): void {
    const existing = this.opsetVersion(domain);
    if (existing !== undefined) {
      if (existing !== version) throw new GraphEditError(`Model already imports ${domain || 'ai.onnx'} version ${existing}; refusing to change it to ${version}`);
      return;
    }
    const entry: OperatorSetIdProto = { domain, version };
    (this.proto.opset_import ??= []).push(entry);
  }

  /** The main graph, function bodies and training graphs, each with its nested subgraphs. */
  *allGraphs(): Iterable<Graph> {
    const tops: Graph[] = [this.graph];
    for (const f of this.functions) tops.push(f.body);
    for (const t of this.trainingInfo) {
      if (t.initialization) tops.push(t.initialization);
      if (t.algorithm) tops.push(t.algorithm);
    }
    for (const top of tops) yield* walkGraphs(top);
  }
}

/** A graph and its nested subgraphs, depth first, without recursion. */
function* walkGraphs(graph: Graph): Iterable<Graph> {
  const stack: Graph[] = [graph];
  while (stack.length) {
    const g = stack.pop()!;
    yield g;
    const found: Graph[] = [];
    for (const node of g) for (const sub of node.subgraphs()) found.push(sub);
    for (let i = found.length - 1; i >= 0; i--) stack.push(found[i]!);
  }
}
