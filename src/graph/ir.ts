/**
 * The graph IR: values know their producer and their ordered uses; node lists are linked lists
 * that stay valid while a pass edits them; subgraph nodes hold the same Value objects as the
 * outer graph, so an outer value's uses include its consumers inside If/Loop/Scan bodies.
 *
 * Every IR object keeps the protobuf message it came from (`proto`) for the fields the IR does
 * not model, so encoding an unedited model reproduces its bytes.
 *
 * Storage: a main graph decoded from bytes keeps its nodes where they are (node-store.ts: byte
 * ranges, names as ids, producers and uses in typed arrays). Its list holds segment entries for
 * runs of them, and a `Node` (with its `Value`s) is built when something reaches it: a producer, a
 * use, a name lookup, findNodes. Walking the list builds the rest. Unbuilt nodes are written back
 * as their bytes. The API is the same either way; only what it costs differs.
 */
import { DataType } from './dtype.js';
import { GraphEditError, OnnxModelError } from './errors.js';
import { adoptNodeBytes, keepNodeSource, nodeSourceBytes, readNodeBody } from './node-bytes.js';
import {
  int64ToNumber,
  type AttributeProto, type FunctionProto, type GraphProto, type ModelProto, type NodeProto,
  type OperatorSetIdProto, type SparseTensorProto, type StringStringEntryProto, type TrainingInfoProto,
  type TypeProto, type ValueInfoProto, isMessage,
} from './proto.js';
import { Tensor } from './tensor.js';
import { makeAttribute, tensorType, type AttributeInput } from './builder.js';
import { NameAllocator } from './names.js';
import { NodeFlag, utf8Bytes, type NodeStore } from './node-store.js';

/** One use of a value: input number `index` of `node`. */
export interface Use { readonly node: Node; readonly index: number }

/** A symbolic or fixed dimension: a number, a name, or undefined when unknown. */
export type Dim = number | string | undefined;

const NO_USES: readonly Use[] = Object.freeze([]);

export class Value {
  /** @internal */
  private producerNode: Node | null = null;
  /** Which output of its producer this value is; -1 for inputs and initializers. */
  producerIndex = -1;
  /** @internal The node store this value's producer or uses are still in (node-store.ts), and its name id there. */
  _store: NodeStore | undefined = undefined;
  /** @internal */
  _storeId = -1;
  /** @internal The producer is a stored node not built yet. */
  _lazyProducer = false;
  /** @internal Some uses are by stored nodes not counted yet: the use list is filled in on first need. */
  _lazyUses = false;
  /** @internal Uses: none, the only one, or a list from the second on (most values have one use; this saves a list per value). */
  private useStore: Use | Use[] | undefined;
  /** The ValueInfoProto this value was declared with (its name field is ignored: `name` rules). */
  info: ValueInfoProto | undefined;
  /** Set when the value is an initializer of `graph`. */
  initializer: Tensor | undefined;
  /** Set when the value is a sparse initializer of `graph`. */
  sparseInitializer: SparseTensorProto | undefined;

  /** @internal The name, set without checks (decoding, and naming by the graph on insertion). */
  _name: string;

  /** `name` may be '' for a value that a graph names on insertion (see Graph). */
  constructor(name: string, public graph: Graph | null = null) {
    this._name = name;
  }

  /** The node that writes this value; null for inputs and initializers. */
  get producer(): Node | null {
    if (this._lazyProducer) this._store!.graph!._builtNode(this._store!.producer[this._storeId]!);
    return this.producerNode;
  }
  set producer(node: Node | null) {
    this._lazyProducer = false;
    this.producerNode = node;
  }

  /** @internal Builds what is still stored about this value (its producer and readers), before an edit that stored bytes could not follow. */
  _settle(): void {
    if (this._lazyProducer) void this.producer;
    if (this._lazyUses) this._completeUses();
  }

  /** @internal Fills the use list with the stored nodes that read this value, in node order. */
  _completeUses(): void {
    const store = this._store!;
    const graph = store.graph!;
    const { nodes, slots, from, to } = store.usesOf(this._storeId);
    // Only this loop records stored readers: a reader built now skips this value (still lazy), and
    // one built earlier did too; each stored (node, input) pair that still reads it is one use.
    for (let i = from; i < to; i++) {
      const k = nodes[i]!, slot = slots[i]!;
      const node = store.built[k] ?? graph._builtNode(k);
      if (node.graph && node._isAttached && node.inputs[slot] === this) this._pushUse(node, slot);
    }
    this._lazyUses = false;
  }

  /**
   * The value's name. Renaming keeps the defining graph's scope in step. A name that the defining
   * graph, an enclosing scope or a scope nested in it (subgraphs, training graphs) already uses is
   * refused with GraphEditError, and nothing changes: readers inside those scopes would otherwise
   * silently read the other value after a save.
   */
  get name(): string { return this._name; }
  set name(name: string) {
    const old = this._name;
    if (name === old) return;
    const graph = this.graph;
    // Stored nodes name this value by its old name in their bytes: build them so they follow.
    if (this._store) this._settle();
    if (graph) {
      const holder = graph._definition(name);
      if (holder && holder !== this) {
        throw new GraphEditError(`Cannot rename value "${old}" to "${name}": that name is already taken by ${describeValue(holder)}. ` +
          'Each name is defined once across a graph and its enclosing and nested scopes; pick a free name (model.names.fresh).');
      }
      const scope = graph._scope;
      if (scope.get(old) === this) {
        scope.delete(old);
        scope.set(name, this);
      }
      graph._noteName(name);
    }
    this._name = name;
  }

  /**
   * Uses in insertion order, including nodes in subgraphs that capture this value: a snapshot (a
   * fresh frozen array), so a loop may rewire them without skipping any. `useCount` and `hasUses`
   * answer without building one.
   */
  get uses(): readonly Use[] {
    if (this._lazyUses) this._completeUses();
    const store = this.useStore;
    if (store === undefined) return NO_USES;
    return Object.freeze(Array.isArray(store) ? store.slice() : [store]);
  }
  get useCount(): number {
    if (this._lazyUses) this._completeUses();
    const store = this.useStore;
    return store === undefined ? 0 : Array.isArray(store) ? store.length : 1;
  }
  get hasUses(): boolean { return this.useCount > 0; }

  /** @internal The first use, without a snapshot. */
  _firstUse(): Use | undefined {
    if (this._lazyUses) this._completeUses();
    const store = this.useStore;
    return store === undefined ? undefined : Array.isArray(store) ? store[0] : store;
  }
  /** @internal The uses without a snapshot (callers must not edit them while looping). */
  _usesUnsafe(): readonly Use[] {
    if (this._lazyUses) this._completeUses();
    const store = this.useStore;
    return store === undefined ? NO_USES : Array.isArray(store) ? store : [store];
  }

  /** @internal The first use by a node other than `node`, without a snapshot. */
  _useOtherThan(node: Node): Use | undefined {
    if (this._lazyUses) this._completeUses();
    const store = this.useStore;
    if (store === undefined) return undefined;
    if (!Array.isArray(store)) return store.node === node ? undefined : store;
    return store.find((u) => u.node !== node);
  }

  /** @internal Only Node changes use lists, so they never drift from the nodes. */
  _addUse(node: Node, index: number): void {
    if (this._lazyUses) this._completeUses();
    this._pushUse(node, index);
  }
  /** @internal A use by a stored node being built: counted now unless the list is still to be filled in. */
  _addStoredUse(node: Node, index: number): void {
    if (!this._lazyUses) this._pushUse(node, index);
  }
  /** @internal */
  _pushUse(node: Node, index: number): void {
    const use = { node, index };
    const store = this.useStore;
    if (store === undefined) this.useStore = use;
    else if (Array.isArray(store)) store.push(use);
    else this.useStore = [store, use];
  }
  /** @internal */
  _removeUse(node: Node, index: number): void {
    if (this._lazyUses) this._completeUses();
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

  get isGraphInput(): boolean { return !!this.graph?._inputs.includes(this); }
  /** Whether the value is an output of the graph that defines it (see also `outputOf`). */
  get isGraphOutput(): boolean { return !!this.graph?._outputs.includes(this); }
  /** Every graph that lists this value as an output: its own, and nested ones that pass it through. */
  outputOf(): Graph[] {
    const found: Graph[] = [];
    const graph = this.graph;
    if (!graph) return found;
    for (const g of graph._scopeTree()) if (g._outputs.includes(this)) found.push(g);
    return found;
  }

  /** Distinct nodes that read this value (including nodes inside subgraphs). */
  consumers(): Node[] { return [...new Set(this.uses.map((u) => u.node))]; }

  /**
   * Points every reader of this value at `other` instead, except the nodes in `except` (typically
   * the node that computes `other` from this value). When this value is a graph output, the call is
   * refused (GraphEditError) unless `replaceGraphOutputs` is set; then those output slots hold
   * `other` too (the graph output takes `other`'s name). A refused call changes nothing.
   */
  replaceAllUsesWith(other: Value, options: { except?: readonly Node[]; replaceGraphOutputs?: boolean } = {}): void {
    if (other === this) return;
    const graphs = this.outputOf();
    if (graphs.length) {
      const where = graphs.map((g) => graphLabel(g)).join(', ');
      if (!options.replaceGraphOutputs) {
        throw new GraphEditError(`Cannot replace all uses of ${this.name}: it is an output of graph ${where}, which would keep reading it. ` +
          'Pass { replaceGraphOutputs: true } to make the graph output read the new value too, or edit the outputs with graph.removeOutput/insertOutput.');
      }
      for (const g of graphs) {
        if (g.lookup(other.name) !== other) {
          throw new GraphEditError(`Cannot make ${other.name} an output of graph ${graphLabel(g)} in place of ${this.name}: it is not defined there or in an enclosing scope`);
        }
      }
    }
    const except = new Set(options.except ?? []);
    for (const use of this.uses) if (!except.has(use.node)) use.node.replaceInput(use.index, other);
    for (const g of graphs) g._replaceOutputValue(this, other);
  }

  toString(): string { return `%${this.name}`; }
}

function graphLabel(g: Graph): string { return g.name !== undefined ? `"${g.name}"` : '(unnamed)'; }

/** "value "x" (output of Relu "r" in graph "main")" style description for messages. */
function describeValue(v: Value): string {
  const what = v.producer && !v.producer.isRemoved ? `output of ${v.producer.describe()}`
    : v.initializer || v.sparseInitializer ? 'an initializer'
    : v.isGraphInput ? 'a graph input' : 'defined';
  return `value "${v.name}" (${what}${v.graph ? ` in graph ${graphLabel(v.graph)}` : ''})`;
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
  /** @internal Linked-list links, null while the node is in no list. */
  _prev: Node | null = null;
  /** @internal */
  _next: Node | null = null;
  /** @internal Bumped on every link and unlink: (node, epoch) names one place in one list, for iterators. */
  _epoch = 0;
  /** @internal The places this node left (newest first), so an iterator standing there can go on. */
  _tomb: Tomb | undefined = undefined;

  /** @internal */
  private inputList: (Value | null)[] = [];
  /** @internal */
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

  /**
   * A node with attributes given as a record, the one way to build a node in code. `outputs` is a
   * count of new values or a list of values, names (strings) or null (an absent optional output).
   * New values and a missing node name are named by the model's name authority (`model.names`)
   * when the node is first inserted into a graph; names given here are kept, and a taken one makes
   * the insertion fail (GraphEditError), never a silent rename.
   *
   * Attribute numbers are typed by value: an integer is an INT, any other number a FLOAT. In
   * JavaScript `1.0` is the integer 1, so a float attribute with a whole value must be written
   * `attr.float(1)` (likewise `attr.floats([1, 2])`).
   */
  static create(
    opType: string,
    inputs: readonly (Value | null)[],
    outputs: number | readonly (Value | string | null)[] = 1,
    options: { name?: string; domain?: string; attributes?: Record<string, AttributeInput> } = {},
  ): Node {
    const outs = typeof outputs === 'number'
      ? Array.from({ length: outputs }, () => new Value(''))
      : outputs.map((o) => (typeof o === 'string' ? new Value(o) : o));
    return new Node(opType, inputs, outs, {
      ...(options.domain !== undefined ? { domain: options.domain } : {}),
      ...(options.name !== undefined ? { name: options.name } : {}),
      attributes: Object.entries(options.attributes ?? {}).map(([k, v]) => makeAttribute(k, v)),
    });
  }

  /** Whether this is `opType` of `domain` ('' and 'ai.onnx' both name the default domain, the default). */
  isOp(opType: string, domain = ''): boolean {
    return this.opType === opType && normalDomain(this.domain) === normalDomain(domain);
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
   * Sets attribute `name` (replacing one of that name in place, else appending). The way to change
   * an attribute: an Attribute's proto read from a file is its source of truth for the encoder, so
   * editing `attribute.proto` in place is not seen by a node still written as its original bytes.
   */
  setAttribute(name: string, value: AttributeInput): Attribute {
    const attribute = makeAttribute(name, value);
    const i = this.attributes.findIndex((a) => a.name === name);
    if (i >= 0) this.attributes[i] = attribute; else this.attributes.push(attribute);
    return attribute;
  }

  /** Removes attribute `name`; false when the node has none of that name. */
  removeAttribute(name: string): boolean {
    const i = this.attributes.findIndex((a) => a.name === name);
    if (i < 0) return false;
    this.attributes.splice(i, 1);
    return true;
  }
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
    for (let i = 0; i < values.length; i++) checkInputValue(this, i, values[i]);
    this.inputList = values;
    if (this.attached) for (let i = 0; i < values.length; i++) values[i]?._addUse(this, i);
  }

  appendInput(value: Value | null): void {
    checkInputValue(this, this.inputList.length, value);
    this.inputList.push(value);
    if (this.attached) value?._addUse(this, this.inputList.length - 1);
  }

  /** Points input `index` at `value`; use lists on both sides stay exact. */
  replaceInput(index: number, value: Value | null): void {
    if (index < 0 || index >= this.inputList.length) {
      throw new GraphEditError(`Node ${this.describe()} has no input #${index}`);
    }
    checkInputValue(this, index, value);
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

  /** Adds an output. In a graph, its name must be free there (see Graph: one producer per name). */
  appendOutput(value: Value | null): void {
    if (value) {
      checkNoOtherProducer(value, this);
      this.graph?._checkDefinable(value, this, undefined);
      this.graph?._nameUnnamed(value, this);
      value.producer = this;
      value.producerIndex = this.outputList.length;
    }
    this.outputList.push(value);
    if (value && this.graph) this.graph._registerOutput(value);
  }

  /**
   * Makes this node write `value` at output `index` instead of what it wrote before. `value` must
   * have no producer, or one that was removed from its graph; in a graph its name must be free
   * there (the old output's name counts as free once nothing reads the old output).
   */
  replaceOutput(index: number, value: Value): void {
    if (!Number.isInteger(index) || index < 0 || index >= this.outputList.length) {
      throw new GraphEditError(`Node ${this.describe()} has no output #${index} (it has ${this.outputList.length})`);
    }
    const old = this.outputList[index];
    if (old === value) return;
    checkNoOtherProducer(value, this);
    const graph = this.graph;
    if (graph) {
      graph._checkDefinable(value, this, old && !old.hasUses && !old.outputOf().length ? old : undefined);
      graph._nameUnnamed(value, this);
    }
    if (old) {
      old.producer = null;
      old.producerIndex = -1;
      if (graph?._scope.get(old.name) === old) graph._scope.delete(old.name);
    }
    value.producer = this;
    value.producerIndex = index;
    this.outputList[index] = value;
    if (graph) graph._registerOutput(value);
  }

  /** @internal Whether this node's inputs are counted in their values' use lists. */
  private attached = true;
  /** @internal */
  get _isAttached(): boolean { return this.attached; }
  /** @internal For a list entry that stands for stored nodes [_segFrom, _segTo) not built yet (see Graph); -1 for a real node. */
  _segFrom = -1;
  /** @internal */
  _segTo = -1;
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
  /** @internal Sets the input list of a node without inputs and without touching use lists (cloning replays uses itself). */
  _setInputsUncounted(values: (Value | null)[]): void { this.inputList = values; }

  /** Whether the node was in a graph and has been removed from it (and not inserted again). */
  get isRemoved(): boolean { return this.graph === null && this._tomb !== undefined; }
  get next(): Node | null { this.graph?._buildAll(); const n = this.graph ? this._next : null; return n && n.graph ? n : null; }
  get prev(): Node | null { this.graph?._buildAll(); const p = this.graph ? this._prev : null; return p && p.graph ? p : null; }

  /** "Gather 'embed' (domain '')" style description for messages. */
  describe(): string {
    const dom = this.domain ? `${this.domain}::` : '';
    return `${dom}${this.opType}${this.name !== undefined ? ` "${this.name}"` : ''}`;
  }
}

/** Where a node was in a list before a removal: the node after it then, at that node's epoch. */
interface Tomb { readonly epoch: number; readonly next: Node; readonly nextEpoch: number; readonly prior: Tomb | undefined }

function tombAt(node: Node, epoch: number): Tomb {
  for (let t = node._tomb; t; t = t.prior) if (t.epoch === epoch) return t;
  throw new Error(`internal: no record of where ${node.describe()} was`);
}

const normalDomain = (domain: string) => (domain === 'ai.onnx' ? '' : domain);

/** A node input is a Value or null (an absent optional input); a name or anything else is refused with what to do. */
function checkInputValue(node: Node, index: number, value: unknown): void {
  if (value === null || value instanceof Value) return;
  const what = typeof value === 'string' ? `the string "${value}"` : value === undefined ? 'undefined' : `a ${typeof value}`;
  throw new GraphEditError(`Input #${index} of ${node.describe()} must be a Value (or null for an absent optional input), not ${what}` +
    (typeof value === 'string' ? `: look the value up first (graph.value("${value}") or graph.lookup for enclosing scopes)` : ''));
}

function checkNoOtherProducer(value: Value, node: Node): void {
  const current = value.producer;
  if (current && current !== node && !current.isRemoved) {
    throw new GraphEditError(`Value ${value.name} already has producer ${current.describe()}`);
  }
}

/** @internal A graph declaration list a value can appear in. */
export type DeclarationList = 'input' | 'output' | 'value_info';

/** @internal Ties `value` (new, or an input or initializer of the graph) to stored name `id`. */
export function bindStored(store: NodeStore, value: Value, id: number): void {
  store.values[id] = value;
  value._store = store;
  value._storeId = id;
  const producer = store.producer[id]!;
  if (producer >= 0 && !store.built[producer]) {
    value._lazyProducer = true;
    value.producerIndex = store.producerSlot[id]!;
  }
  value._lazyUses = store.useCount[id]! > 0;
}

/** What Graph.findNodes matches: every given condition must hold. */
export interface NodeFilter {
  /** One op type or several (any domain). */
  opType?: string | Iterable<string>;
  /** The node's name starts with this (unnamed nodes never match). */
  namePrefix?: string;
  /** The node holds at least one subgraph (true) or none (false). */
  hasSubgraphs?: boolean;
  /** The node holds a tensor in an attribute (t, tensors, sparse_tensor, sparse_tensors; true) or none (false). */
  hasTensorAttribute?: boolean;
}

const TENSOR_ATTRIBUTE_FIELDS = ['t', 'tensors', 'sparse_tensor', 'sparse_tensors'] as const;
const holdsTensor = (a: Attribute) => TENSOR_ATTRIBUTE_FIELDS.some((f) => { const x = a.proto[f]; return Array.isArray(x) ? x.length > 0 : x != null; });

function matchesFilter(node: Node, opTypes: ReadonlySet<string> | undefined, filter: NodeFilter): boolean {
  if (opTypes && !opTypes.has(node.opType)) return false;
  if (filter.namePrefix !== undefined && !node.name?.startsWith(filter.namePrefix)) return false;
  if (filter.hasSubgraphs !== undefined && filter.hasSubgraphs !== node.attributes.some((a) => a.graphs.length > 0)) return false;
  if (filter.hasTensorAttribute !== undefined && filter.hasTensorAttribute !== node.attributes.some(holdsTensor)) return false;
  return true;
}

/**
 * A graph's inputs or outputs as a frozen snapshot (taken again after each edit), so a loop over
 * it may edit the graph. Edit through the graph: addInput, insertInput, removeInput, addOutput,
 * insertOutput, removeOutput.
 */
export interface ValueList extends ReadonlyArray<Value> {
  /** @deprecated Use graph.removeInput / graph.removeOutput; this removes like them with `{ force: true }`. */
  splice(start: number, deleteCount?: number): Value[];
  /** @deprecated Use graph.removeInput / graph.removeOutput; this removes the last entry like them with `{ force: true }`. */
  pop(): Value | undefined;
}

/** The names defined in one graph. Read-only: names change through the graph and value methods. */
export interface GraphScope extends ReadonlyMap<string, Value> {
  /** @deprecated Scope entries follow the graph's edits (removeInput, remove, ...); deleting one by hand breaks lookups. */
  delete(name: string): boolean;
}

/**
 * A graph: its node list, inputs, outputs, initializers and the scope its values are named in.
 *
 * Names: each name is defined once (one producer, input or initializer) across a graph, its
 * enclosing scopes and the scopes nested in it. Inserting a node that writes a taken name, adding
 * an input or initializer under a taken name, or renaming a value onto one is refused with
 * GraphEditError, and the refused edit changes nothing. Values named '' and nodes without a name
 * get fresh names from the model's name authority (`model.names`) when first inserted.
 *
 * Iteration (`for (const node of graph)`): the next node is found when asked for. The loop may
 * remove the current node or move it (elsewhere in this graph or to another graph): it goes on from
 * where the node was and does not visit it again. Nodes inserted after the current place are
 * visited; nodes inserted before it are not. topologicalSort of the graph during the loop is not
 * allowed: the next step throws GraphEditError.
 */
export class Graph {
  /** @internal */
  readonly _inputs: Value[] = [];
  /** @internal */
  readonly _outputs: Value[] = [];
  /** Declared intermediate values (value_info), in file order. */
  readonly valueInfo: Value[] = [];
  /** @internal */
  readonly _initializers: Value[] = [];
  /** @internal */
  readonly _sparseInitializers: Value[] = [];
  /** The node whose attribute holds this graph (null for a top-level graph). */
  owner: Node | null = null;
  /** @internal */
  _parentScope: Graph | null = null;
  /** @internal Graphs whose parentScope is this one (subgraphs, training graphs), for name checks. */
  _childScopes: Set<Graph> | undefined = undefined;
  /** @internal Value names defined in this graph (inputs, initializers, node outputs). */
  readonly _scope = new Map<string, Value>();
  /**
   * @internal Declarations that differ from the value's primary one (a value listed both as an
   * output and in value_info with other details). Kept so the round trip is exact.
   */
  readonly declarationOverrides = new Map<DeclarationList, Map<Value, ValueInfoProto>>();
  proto: GraphProto;
  /** @internal The model whose top-level graph this is. */
  _model: Model | undefined = undefined;
  /** @internal Name authority of a graph tree that belongs to no model. */
  _localNames: NameAllocator | undefined = undefined;
  /** @internal Bumped by topologicalSort, which relinks the list in place. */
  _reorders = 0;
  /**
   * @internal Nodes still held as their source bytes (node-store.ts). The list then holds segment
   * entries (`_segFrom`/`_segTo`) for runs of them; a node is built when reached (a producer, a
   * use, a name lookup, findNodes) and everything when the list itself is walked.
   */
  _store: NodeStore | undefined = undefined;
  /** @internal Per stored node, the segment entry holding it while unbuilt (made on the first build). */
  private segmentOf: (Node | undefined)[] | undefined = undefined;

  /** @internal */
  private readonly sentinel: Node;
  /** @internal */
  private count = 0;
  /** @internal */
  private views: { inputs?: ValueList; outputs?: ValueList; initializers?: readonly Value[]; sparseInitializers?: readonly Value[] } = {};

  constructor(proto: GraphProto = {}) {
    this.proto = proto;
    this.sentinel = new Node('<sentinel>');
    this.sentinel._next = this.sentinel;
    this.sentinel._prev = this.sentinel;
  }

  get name(): string | undefined { return this.proto.name; }
  set name(name: string | undefined) { if (name === undefined) delete this.proto.name; else this.proto.name = name; }

  /** Graph inputs (a snapshot; see ValueList). */
  get inputs(): ValueList { return this.views.inputs ??= listView(this._inputs, (i) => this.removeInput(i, { force: true })); }
  /** Graph outputs (a snapshot; see ValueList). */
  get outputs(): ValueList { return this.views.outputs ??= listView(this._outputs, (i) => this.removeOutput(i)); }
  /** Initializers in file order (a frozen snapshot; edit with addInitializer / removeInitializer). */
  get initializers(): readonly Value[] { return this.views.initializers ??= Object.freeze(this._initializers.slice()); }
  get sparseInitializers(): readonly Value[] { return this.views.sparseInitializers ??= Object.freeze(this._sparseInitializers.slice()); }
  /** @internal Drops the snapshots after an edit of the lists. */
  _listsChanged(): void { this.views = {}; }

  /** Value names defined in this graph (inputs, initializers, node outputs). */
  get scope(): GraphScope { this._buildAll(); return this._scope; }

  /** The scope names resolve against after this graph's own (set for subgraphs and training graphs). */
  get parentScope(): Graph | null { return this._parentScope; }
  set parentScope(parent: Graph | null) {
    if (parent === this._parentScope) return;
    for (let g = parent; g; g = g._parentScope) {
      if (g === this) throw new GraphEditError(`Graph ${graphLabel(this)} cannot be nested in itself`);
    }
    this._parentScope?._childScopes?.delete(this);
    this._parentScope = parent;
    if (parent) (parent._childScopes ??= new Set()).add(this);
  }

  get nodeCount(): number { return this.count; }

  /** Nodes in list order; see the class comment for edits during the loop. */
  [Symbol.iterator](): Iterator<Node> { this._buildAll(); return new NodeIterator(this, this.sentinel); }
  /** @internal Pushes the subgraphs held by this graph's nodes, in node order, onto `into`: a plain list walk, no iterator or array per node. */
  _collectSubgraphs(into: Graph[]): void {
    for (let node = this.sentinel._next!; node !== this.sentinel; node = node._next!) {
      const attributes = node.attributes;
      for (let i = 0; i < attributes.length; i++) {
        const graphs = attributes[i]!.graphs;
        for (let j = 0; j < graphs.length; j++) into.push(graphs[j]!);
      }
    }
  }
  get nodes(): Node[] { return [...this]; }
  /**
   * The nodes of this graph (not of its subgraphs) that match every condition of `filter`, in list
   * order. On a graph decoded from bytes only the nodes returned are built as objects, so a pass
   * that looks for a few op types in a large graph does not pay for the rest.
   */
  findNodes(filter: NodeFilter = {}): Node[] {
    const opTypes = filter.opType === undefined ? undefined : new Set(typeof filter.opType === 'string' ? [filter.opType] : filter.opType);
    const store = this._store;
    if (!store) {
      const found: Node[] = [];
      for (const node of this) if (matchesFilter(node, opTypes, filter)) found.push(node);
      return found;
    }
    // Stored nodes are tested on their bytes; only the matches are built, once the walk is over.
    let opMatch: Uint8Array | undefined;
    if (opTypes) {
      opMatch = new Uint8Array(store.ops.count);
      for (let id = 0; id < store.ops.count; id++) if (opTypes.has(store.ops.text(id))) opMatch[id] = 1;
    }
    const prefix = filter.namePrefix === undefined ? undefined : utf8Bytes(filter.namePrefix);
    const picked: (Node | number)[] = [];
    for (let node = this.sentinel._next!; node !== this.sentinel; node = node._next!) {
      if (node._segFrom < 0) {
        if (matchesFilter(node, opTypes, filter)) picked.push(node);
        continue;
      }
      for (let k = node._segFrom; k < node._segTo; k++) {
        if (opMatch && !opMatch[store.op[k]!]) continue;
        if (prefix && !store.nameStartsWith(k, prefix)) continue;
        const flags = store.flags[k]!;
        if (filter.hasSubgraphs !== undefined && ((flags & NodeFlag.Subgraph) !== 0) !== filter.hasSubgraphs) continue;
        if (filter.hasTensorAttribute !== undefined && ((flags & NodeFlag.Tensor) !== 0) !== filter.hasTensorAttribute) continue;
        picked.push(k);
      }
    }
    return picked.map((p) => (typeof p === 'number' ? this._builtNode(p) : p));
  }
  /** How many nodes of each op type (any domain) this graph holds, not counting its subgraphs. */
  opTypeCounts(): Map<string, number> {
    const counts = new Map<string, number>();
    const store = this._store;
    let stored: Int32Array | undefined;
    for (let node = this.sentinel._next!; node !== this.sentinel; node = node._next!) {
      if (node._segFrom < 0) { counts.set(node.opType, (counts.get(node.opType) ?? 0) + 1); continue; }
      stored ??= new Int32Array(store!.ops.count);
      for (let k = node._segFrom; k < node._segTo; k++) stored[store!.op[k]!]!++;
    }
    if (stored) {
      for (let id = 0; id < stored.length; id++) {
        if (!stored[id]) continue;
        const op = store!.ops.text(id);
        counts.set(op, (counts.get(op) ?? 0) + stored[id]!);
      }
    }
    return counts;
  }

  /** @internal Takes the nodes of `store` as this graph's node list (decoding: the list is empty, inputs and initializers are registered). */
  _adoptStore(store: NodeStore): void {
    if (!store.count) return;
    store.graph = this;
    this._store = store;
    const segment = new Node('<stored nodes>');
    segment._segFrom = 0;
    segment._segTo = store.count;
    segment.graph = this;
    this.splice(this.sentinel._prev!, segment);
    this.count += store.count - 1;
  }

  /** @internal Appends a segment entry for stored nodes [from, to) (a copy of a graph that holds them). */
  _appendStored(from: number, to: number): void {
    const segment = new Node('<stored nodes>');
    segment._segFrom = from;
    segment._segTo = to;
    this.splice(this.sentinel._prev!, segment);
    this.count += to - from - 1;
  }

  /** @internal The node built for stored node k (built now if it was not). */
  _builtNode(k: number): Node {
    const store = this._store!;
    const known = store.built[k];
    if (known) return known;
    const segmentOf = this.segmentOf ??= this.indexSegments();
    const segment = segmentOf[k]!;
    segmentOf[k] = undefined;
    const node = this.makeStoredNode(k);
    const from = segment._segFrom, to = segment._segTo;
    if (from === k && to === k + 1) {
      this.replaceEntry(segment, node);
    } else if (from === k) {
      segment._segFrom = k + 1;
      this.linkEntry(segment._prev!, node);
    } else if (to === k + 1) {
      segment._segTo = k;
      this.linkEntry(segment, node);
    } else {
      // Split: the smaller side gets a new entry (and its nodes a new owner), so each stored node is
      // moved O(log n) times however the builds are ordered.
      const part = new Node('<stored nodes>');
      part.graph = this;
      if (k - from <= to - k - 1) {
        part._segFrom = from;
        part._segTo = k;
        segment._segFrom = k + 1;
        this.linkEntry(segment._prev!, part);
        this.linkEntry(part, node);
        for (let i = from; i < k; i++) segmentOf[i] = part;
      } else {
        part._segFrom = k + 1;
        part._segTo = to;
        segment._segTo = k;
        this.linkEntry(segment, node);
        this.linkEntry(node, part);
        for (let i = k + 1; i < to; i++) segmentOf[i] = part;
      }
    }
    return node;
  }

  /** @internal Which segment entry holds each unbuilt stored node. */
  private indexSegments(): (Node | undefined)[] {
    const segmentOf = new Array<Node | undefined>(this._store!.count);
    for (let node = this.sentinel._next!; node !== this.sentinel; node = node._next!) {
      for (let k = node._segFrom; k < node._segTo; k++) segmentOf[k] = node;
    }
    return segmentOf;
  }

  /** @internal Builds every stored node in list order and lets go of the store: the graph is plain objects again. */
  _buildAll(): void {
    const store = this._store;
    if (!store) return;
    const segments: Node[] = [];
    for (let node = this.sentinel._next!; node !== this.sentinel; node = node._next!) if (node._segFrom >= 0) segments.push(node);
    for (const segment of segments) {
      let at = segment._prev!;
      for (let k = segment._segFrom; k < segment._segTo; k++) {
        const node = this.makeStoredNode(k);
        this.linkEntry(at, node);
        at = node;
      }
      this.unlinkEntry(segment);
    }
    this.segmentOf = undefined;
    for (const value of store.values) if (value) value._settle();
    for (const value of store.values) if (value) value._store = undefined;
    this._store = undefined;
  }

  /** @internal A stored node as a Node: its fields from the bytes, its values from the store's names. */
  private makeStoredNode(k: number): Node {
    const store = this._store!;
    const from = store.bodyStart[k]!, to = store.bodyEnd[k]!;
    const body = readNodeBody(store.bytes, from, to);
    const node = new Node(body.proto.op_type ?? '', [], [], { proto: body.proto });
    for (const ap of body.attributes ?? []) node.attributes.push(new Attribute(ap));
    keepNodeSource(node, body, store.bytes, from, to);
    const outFrom = store.outFrom[k]!, outTo = store.outFrom[k + 1]!;
    const outputs = new Array<Value | null>(outTo - outFrom);
    for (let j = outFrom; j < outTo; j++) {
      const id = store.outIds[j]!;
      const value = id < 0 ? null : this._storedValue(id);
      if (value) value._lazyProducer = false;
      outputs[j - outFrom] = value;
    }
    node._adoptOutputs(outputs);
    const inFrom = store.inFrom[k]!, inTo = store.inFrom[k + 1]!;
    const inputs = new Array<Value | null>(inTo - inFrom);
    for (let j = inFrom; j < inTo; j++) {
      const id = store.inIds[j]!;
      inputs[j - inFrom] = id < 0 ? null : this._storedValue(id);
    }
    node._setInputsUncounted(inputs);
    for (let i = 0; i < inputs.length; i++) inputs[i]?._addStoredUse(node, i);
    store.built[k] = node;
    store.builtCount++;
    return node;
  }

  /** @internal How many nodes exist as objects (all of them unless the graph still holds stored nodes): for tests and benchmarks. */
  _builtNodeCount(): number {
    const store = this._store;
    return store ? this.count - store.count + store.builtCount : this.count;
  }

  /** @internal The Value of stored name `id` (made, with its producer and uses still stored, when first asked for). */
  _storedValue(id: number): Value {
    const store = this._store!;
    const known = store.values[id];
    if (known) return known;
    const value = new Value(store.names.text(id));
    value.graph = this;
    bindStored(store, value, id);
    if (!this._scope.has(value._name)) this._scope.set(value._name, value);
    return value;
  }

  /** @internal A value defined here by name: in the scope map, or a stored node's output not reached yet. */
  _local(name: string): Value | undefined {
    const value = this._scope.get(name);
    if (value !== undefined || this._store === undefined) return value;
    const store = this._store;
    const id = store.names.find(name);
    // A name whose value was made already is in the scope map, or left it (removed, renamed).
    if (id < 0 || store.values[id] || store.producer[id]! < 0) return undefined;
    return this._storedValue(id);
  }

  /** @internal Calls `visit` for each list entry: a node, or a run [from, to) of stored nodes. */
  _forEachEntry(visit: (node: Node) => void, visitStored: (store: NodeStore, from: number, to: number) => void): void {
    for (let node = this.sentinel._next!; node !== this.sentinel; node = node._next!) {
      if (node._segFrom < 0) visit(node); else visitStored(this._store!, node._segFrom, node._segTo);
    }
  }

  /** @internal Every name used here (values, node names), or those starting with `prefix`, without building stored nodes. */
  _forEachName(prefix: string | undefined, add: (name: string) => void): void {
    for (const name of this._scope.keys()) if (prefix === undefined || name.startsWith(prefix)) add(name);
    const bytes = prefix === undefined ? undefined : utf8Bytes(prefix);
    this._forEachEntry((node) => {
      const keep = (name: string) => { if (prefix === undefined || name.startsWith(prefix)) add(name); };
      if (node.name !== undefined) keep(node.name);
      for (const v of node.inputs) if (v) keep(v.name);
      for (const v of node.outputs) if (v) keep(v.name);
    }, (store, from, to) => {
      for (let k = from; k < to; k++) if (bytes ? store.nameStartsWith(k, bytes) : store.nameStart[k]! >= 0) add(store.nodeName(k)!);
    });
    // Stored names: those no Value was made for are read only by stored nodes; a made Value is named by
    // the scope map or a built node above, or (removed, renamed) only while stored nodes still read it.
    const store = this._store;
    if (!store) return;
    for (let id = 0; id < store.names.count; id++) {
      const value = store.values[id];
      if (value) { if (value._lazyUses && (prefix === undefined || value.name.startsWith(prefix))) add(value.name); continue; }
      if (!bytes || store.names.startsWith(id, bytes)) add(store.names.text(id));
    }
  }

  /** @internal Links a list entry after `anchor` without the checks and counts of insertion. */
  private linkEntry(anchor: Node, node: Node): void {
    node._prev = anchor;
    node._next = anchor._next;
    anchor._next!._prev = node;
    anchor._next = node;
    node.graph = this;
  }
  /** @internal */
  private unlinkEntry(node: Node): void {
    node._prev!._next = node._next;
    node._next!._prev = node._prev;
    node._prev = null;
    node._next = null;
    node.graph = null;
  }
  /** @internal */
  private replaceEntry(old: Node, node: Node): void {
    const anchor = old._prev!;
    this.unlinkEntry(old);
    this.linkEntry(anchor, node);
  }
  get first(): Node | null { this._buildAll(); return this.sentinel._next === this.sentinel ? null : this.sentinel._next; }
  get last(): Node | null { this._buildAll(); return this.sentinel._prev === this.sentinel ? null : this.sentinel._prev; }

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
        const reader = out._useOtherThan(node);
        if (reader) throw new GraphEditError(`Cannot remove ${node.describe()}: its output ${out.name} is read by ${reader.node.describe()}`);
        if (out.outputOf().length) throw new GraphEditError(`Cannot remove ${node.describe()}: its output ${out.name} is a graph output`);
      }
    }
    node._detachInputs();
    this.unlink(node);
    for (const out of node.outputs) if (out && this._scope.get(out.name) === out) this._scope.delete(out.name);
  }

  /** @internal */
  private checkMember(node: Node): void {
    if (node.graph !== this) throw new GraphEditError(`Node ${node.describe()} is not in graph ${graphLabel(this)}`);
  }

  /** @internal Links `node` into the list after `anchor`. */
  private splice(anchor: Node, node: Node): void {
    node._prev = anchor;
    node._next = anchor._next;
    anchor._next!._prev = node;
    anchor._next = node;
    node._epoch++;
    node.graph = this;
    this.count++;
  }

  /** @internal Takes `node` out of the list, leaving a record of its place for iterators standing on it. */
  private unlink(node: Node): void {
    const next = node._next!;
    node._tomb = { epoch: node._epoch, next, nextEpoch: next._epoch, prior: node._tomb };
    node._epoch++;
    node._prev!._next = next;
    next._prev = node._prev;
    node._prev = null;
    node._next = null;
    node.graph = null;
    this.count--;
  }

  /** @internal Insertion with the checks and naming described in the class comment. */
  private linkAfter(anchor: Node, node: Node): Node {
    if (node.graph) throw new GraphEditError(`Node ${node.describe()} is already in graph ${graphLabel(node.graph)}; remove it first`);
    const outputs = node.outputs;
    const seen = new Set<string>();
    for (const out of outputs) {
      if (!out || out.name === '') continue;
      if (seen.has(out.name)) throw new GraphEditError(`Cannot insert ${node.describe()}: it writes "${out.name}" twice`);
      seen.add(out.name);
      this._checkDefinable(out, node, undefined);
    }
    // Checks passed: only now is anything changed.
    const firstInsertion = node._tomb === undefined && node._epoch === 0;
    for (const out of outputs) if (out) this._nameUnnamed(out, node);
    if (firstInsertion && node.name === undefined) node.name = this._names().fresh(node.opType || 'node');
    else if (node.name !== undefined) this._noteName(node.name);
    this.splice(anchor, node);
    node._attachInputs();
    for (const out of outputs) if (out) this._registerOutput(out);
    for (const sub of node.subgraphs()) { sub.owner = node; sub.parentScope = this; }
    return node;
  }

  /**
   * @internal Throws unless `value` may be defined here as a node output (or, without `node`, as an
   * input or initializer): its name is free across the scope chain, or taken by the value itself (or
   * by `free`, a value about to be replaced), and it is no input or initializer.
   */
  _checkDefinable(value: Value, node: Node | undefined, free: Value | undefined): void {
    if (value.name === '') return;
    const holder = this._definition(value.name);
    const what = node ? `${node.describe()} cannot write "${value.name}"` : `Cannot add "${value.name}" to graph ${graphLabel(this)}`;
    if (holder && holder !== value && holder !== free) {
      throw new GraphEditError(`${what}: the name is already defined by ${describeValue(holder)}. One producer per name: give the new value a fresh name (model.names.fresh).`);
    }
    if (node && (value.initializer || value.sparseInitializer || (value.graph && value.graph._inputs.includes(value)))) {
      throw new GraphEditError(`${what}: ${describeValue(value)} is a graph input or initializer, which no node may write`);
    }
  }

  /** @internal Names a value named '' by the name authority (the only renaming the graph does itself). */
  _nameUnnamed(value: Value, node: Node | undefined): void {
    if (value.name === '') value._name = this._names().fresh(node ? `${node.opType || 'node'}_output` : 'value');
  }

  /** @internal Registers a node output defined here (after _checkDefinable). */
  _registerOutput(value: Value): void {
    const previous = value.graph;
    if (previous && previous !== this && previous._scope.get(value.name) === value) previous._scope.delete(value.name);
    value.graph = this;
    if (value.name !== '' && !this._scope.has(value.name)) this._scope.set(value.name, value);
    this._noteName(value.name);
  }

  /** @internal Appends a node being decoded, whose outputs are already defined here (no scope work). */
  _appendDefined(node: Node): void { this.splice(this.sentinel._prev!, node); }

  /** @internal Appends a decoded node: registers outputs as the file has them (first definition wins), no checks. */
  _appendDecoded(node: Node): void {
    this.splice(this.sentinel._prev!, node);
    node._attachInputs();
    for (const out of node.outputs) {
      if (!out) continue;
      out.graph = this;
      if (!this._scope.has(out.name)) this._scope.set(out.name, out);
    }
  }

  /** @internal Relinks the list in `order` (the same nodes); running iterators refuse to go on. */
  _reorder(order: readonly Node[]): void {
    let prev = this.sentinel;
    for (const node of order) { prev._next = node; node._prev = prev; prev = node; }
    prev._next = this.sentinel;
    this.sentinel._prev = prev;
    this._reorders++;
  }

  /** Looks a name up in this graph, then in enclosing scopes. */
  lookup(name: string): Value | undefined {
    for (let g: Graph | null = this; g; g = g._parentScope) {
      const v = g._local(name);
      if (v) return v;
    }
    return undefined;
  }

  /** @internal This graph and every scope nested in it (subgraphs of nodes still in their graph, training graphs). */
  *_scopeTree(): Iterable<Graph> {
    const stack: Graph[] = [this];
    while (stack.length) {
      const g = stack.pop()!;
      yield g;
      if (g._childScopes) for (const child of g._childScopes) if (!child.owner || child.owner.graph === g) stack.push(child);
    }
  }

  /** @internal The value defining `name` here, in an enclosing scope or in a nested one. */
  _definition(name: string): Value | undefined {
    const found = this.lookup(name);
    if (found || !this._childScopes) return found;
    for (const g of this._scopeTree()) {
      const v = g._local(name);
      if (v) return v;
    }
    return undefined;
  }

  /** @internal The name authority of this graph's model (or of its graph tree when it has no model). */
  _names(): NameAllocator {
    let root: Graph = this;
    while (root._parentScope) root = root._parentScope;
    return root._model?.names ?? (root._localNames ??= new NameAllocator(root));
  }

  /** @internal Tells an existing name authority that `name` is now used. */
  _noteName(name: string): void {
    let root: Graph = this;
    while (root._parentScope) root = root._parentScope;
    (root._model?._names ?? root._localNames)?.add(name);
  }

  /** @internal Registers a decoded value (first definition of a name wins; no checks). */
  _register(value: Value): Value {
    value.graph = this;
    if (!this._scope.has(value.name)) this._scope.set(value.name, value);
    return value;
  }

  /** @internal Appends to a list as decoded (no checks). */
  _pushDecoded(list: 'input' | 'output' | 'initializer' | 'sparse', value: Value): void {
    (list === 'input' ? this._inputs : list === 'output' ? this._outputs : list === 'initializer' ? this._initializers : this._sparseInitializers).push(value);
    this.views = {};
  }

  /** Adds a graph input (see insertInput). */
  addInput(value: Value): Value { return this.insertInput(this._inputs.length, value); }
  /**
   * Makes `value` graph input number `index`. Refused (GraphEditError) when it is an input here
   * already, is written by a node, belongs to another graph, or its name is taken (see the class comment).
   */
  insertInput(index: number, value: Value): Value {
    if (!Number.isInteger(index) || index < 0 || index > this._inputs.length) throw new GraphEditError(`Graph ${graphLabel(this)} has no input position ${index}`);
    if (this._inputs.includes(value)) throw new GraphEditError(`Value ${value.name} is already an input of graph ${graphLabel(this)}`);
    this.checkNewDefinition(value, 'an input');
    this._nameUnnamed(value, undefined);
    this._register(value);
    this._noteName(value.name);
    this._inputs.splice(index, 0, value);
    this._listsChanged();
    return value;
  }
  /**
   * Removes a graph input (by value or position) and returns it. Refused while nodes read it or a
   * graph output passes it through, unless `force`; an input that is also an initializer stays
   * defined as the initializer.
   */
  removeInput(input: Value | number, options: { force?: boolean } = {}): Value {
    const i = typeof input === 'number' ? input : this._inputs.indexOf(input);
    const value = this._inputs[i];
    if (!value) throw new GraphEditError(`${typeof input === 'number' ? `Input #${input}` : `Value ${input.name}`} is not an input of graph ${graphLabel(this)}`);
    if (!options.force && !value.initializer) {
      const use = value._firstUse();
      if (use) throw new GraphEditError(`Cannot remove input ${value.name} of graph ${graphLabel(this)}: it is read by ${use.node.describe()}; rewire its readers first, or pass { force: true }`);
      if (value.outputOf().length) throw new GraphEditError(`Cannot remove input ${value.name} of graph ${graphLabel(this)}: it is a graph output`);
    }
    this._inputs.splice(i, 1);
    this._listsChanged();
    if (!this._inputs.includes(value) && !value.initializer && !value.sparseInitializer && this._scope.get(value.name) === value) this._scope.delete(value.name);
    return value;
  }

  /**
   * Turns an initializer into a plain graph input, keeping the value and its readers (a weight fed
   * at run time, as training steps need: ORT-web refuses an input that also has an initializer).
   */
  initializerToInput(value: Value): Value {
    const i = this._initializers.indexOf(value);
    if (i < 0) throw new GraphEditError(`Value ${value.name} is not an initializer of graph ${graphLabel(this)}`);
    this._initializers.splice(i, 1);
    const tensor = value.initializer!;
    value.initializer = undefined;
    // ONNX graph inputs are typed: an untyped one takes the tensor's type and shape.
    if (!value.type) value.type = tensorType(tensor.dataType, tensor.dims);
    if (!this._inputs.includes(value)) this._inputs.push(value);
    this._listsChanged();
    return value;
  }

  /** Adds a graph output (see insertOutput). */
  addOutput(value: Value): Value { return this.insertOutput(this._outputs.length, value); }
  /**
   * Makes `value` graph output number `index`. It must be what its name means here (defined in this
   * graph or an enclosing scope), and not an output already.
   */
  insertOutput(index: number, value: Value): Value {
    if (!Number.isInteger(index) || index < 0 || index > this._outputs.length) throw new GraphEditError(`Graph ${graphLabel(this)} has no output position ${index}`);
    if (this._outputs.includes(value)) throw new GraphEditError(`Value ${value.name} is already an output of graph ${graphLabel(this)}`);
    const found = this.lookup(value.name);
    if (found !== value) {
      throw new GraphEditError(`Cannot make ${value.name} an output of graph ${graphLabel(this)}: ` +
        (found ? `that name means ${describeValue(found)} here` : 'it is not defined there or in an enclosing scope (insert its producer first)'));
    }
    this._outputs.splice(index, 0, value);
    this._listsChanged();
    return value;
  }
  /** Removes a graph output entry (by value or position) and returns its value; the value itself stays. */
  removeOutput(output: Value | number): Value {
    const i = typeof output === 'number' ? output : this._outputs.indexOf(output);
    const value = this._outputs[i];
    if (!value) throw new GraphEditError(`${typeof output === 'number' ? `Output #${output}` : `Value ${output.name}`} is not an output of graph ${graphLabel(this)}`);
    this._outputs.splice(i, 1);
    this._listsChanged();
    if (!this._outputs.includes(value)) this.declarationOverrides.get('output')?.delete(value);
    return value;
  }
  /** @internal Every output slot holding `old` holds `value` instead (replaceAllUsesWith). */
  _replaceOutputValue(old: Value, value: Value): void {
    for (let i = 0; i < this._outputs.length; i++) if (this._outputs[i] === old) this._outputs[i] = value;
    this.declarationOverrides.get('output')?.delete(old);
    this._listsChanged();
  }

  /** Makes `value` an initializer holding `tensor` (it may be a graph input already); its name must be free otherwise. */
  addInitializer(value: Value, tensor: Tensor): Value {
    if (this._initializers.includes(value)) throw new GraphEditError(`Value ${value.name} is already an initializer of graph ${graphLabel(this)}`);
    this.checkNewDefinition(value, 'an initializer');
    this._nameUnnamed(value, undefined);
    value.initializer = tensor;
    this._register(value);
    this._noteName(value.name);
    this._initializers.push(value);
    this._listsChanged();
    return value;
  }
  initializer(name: string): Value | undefined { return this._initializers.find((v) => v.name === name); }
  /** Removes an initializer (a graph input of the same value stays an input). Refused while it is still read. */
  removeInitializer(value: Value): void {
    const i = this._initializers.indexOf(value);
    if (i < 0) throw new GraphEditError(`Value ${value.name} is not an initializer of graph ${graphLabel(this)}`);
    const use = value._firstUse();
    if (use) throw new GraphEditError(`Initializer ${value.name} is still read by ${use.node.describe()}`);
    this._initializers.splice(i, 1);
    this._listsChanged();
    value.initializer = undefined;
    if (this._scope.get(value.name) === value && !this._inputs.includes(value)) this._scope.delete(value.name);
  }

  /** @internal Checks for a value becoming an input or initializer of this graph. */
  private checkNewDefinition(value: Value, role: string): void {
    if (value.graph && value.graph !== this) {
      throw new GraphEditError(`Cannot make ${describeValue(value)} ${role} of graph ${graphLabel(this)}: it belongs to another graph`);
    }
    if (value.producer && !value.producer.isRemoved) {
      throw new GraphEditError(`Cannot make ${value.name} ${role} of graph ${graphLabel(this)}: it is written by ${value.producer.describe()}`);
    }
    this._checkDefinable(value, undefined, undefined);
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
  value(name: string): Value | undefined { return this._local(name); }
}

/** A frozen copy of `list` whose deprecated splice/pop remove through the graph. */
function listView(list: readonly Value[], removeAt: (index: number) => Value): ValueList {
  const view = list.slice();
  Object.defineProperty(view, 'splice', {
    value: (start: number, deleteCount?: number): Value[] => {
      const n = list.length;
      const from = start < 0 ? Math.max(n + start, 0) : Math.min(start, n);
      const count = Math.max(0, Math.min(deleteCount ?? n - from, n - from));
      const removed: Value[] = [];
      for (let i = 0; i < count; i++) removed.push(removeAt(from));
      return removed;
    },
  });
  Object.defineProperty(view, 'pop', { value: (): Value | undefined => (list.length ? removeAt(list.length - 1) : undefined) });
  return Object.freeze(view) as unknown as ValueList;
}

/**
 * Walks a node list (see Graph for the rules). It stands on a place, (node, epoch): while that
 * node stays put its successor is next; once it has left, the record of its place (Tomb) gives
 * the node that followed it. (A class rather than a generator: three to four times faster over a
 * million nodes.)
 */
class NodeIterator implements Iterator<Node> {
  private at: Node;
  private epoch: number;
  private readonly reorders: number;
  /** Nodes this loop stood on that then left their place: not visited again where they went. */
  private moved: Set<Node> | undefined;
  constructor(private readonly graph: Graph, private readonly sentinel: Node) {
    this.at = sentinel;
    this.epoch = sentinel._epoch;
    this.reorders = graph._reorders;
  }
  next(): IteratorResult<Node> {
    if (this.graph._reorders !== this.reorders) {
      throw new GraphEditError(`Graph ${graphLabel(this.graph)} was reordered (topologicalSort) during a loop over its nodes; sort before or after the loop`);
    }
    let node: Node, epoch: number;
    const at = this.at;
    if (at._epoch === this.epoch) {
      node = at._next!;
      epoch = node._epoch;
    } else {
      (this.moved ??= new Set()).add(at);
      const tomb = tombAt(at, this.epoch);
      node = tomb.next;
      epoch = tomb.nextEpoch;
    }
    for (;;) {
      while (node._epoch !== epoch) {
        const tomb = tombAt(node, epoch);
        node = tomb.next;
        epoch = tomb.nextEpoch;
      }
      if (node === this.sentinel || this.moved === undefined || !this.moved.has(node)) break;
      node = node._next!;
      epoch = node._epoch;
    }
    this.at = node;
    this.epoch = epoch;
    if (node === this.sentinel) return { done: true, value: undefined };
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
  /** @internal */
  private readonly holder: { metadata_props?: StringStringEntryProto[] };
  constructor(holder: { metadata_props?: StringStringEntryProto[] }) { this.holder = holder; }
  /** @internal */
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
  /** @internal */
  _graph!: Graph;
  /** @internal */
  _names: NameAllocator | undefined = undefined;

  constructor(public proto: ModelProto, graph: Graph) {
    this.metadata = new Metadata(proto);
    this.graph = graph;
  }

  get graph(): Graph { return this._graph; }
  set graph(graph: Graph) {
    if (this._graph && this._graph._model === this) this._graph._model = undefined;
    this._graph = graph;
    graph._model = this;
  }

  /**
   * The model's name authority: fresh value and node names no scope of the model uses, kept up to
   * date with names added through the graph API. Graphs name unnamed nodes and values with it.
   */
  get names(): NameAllocator { return this._names ??= new NameAllocator(this); }

  /**
   * A deep copy: editing one model never shows in the other. Nothing is encoded or decoded: nodes
   * still backed by the bytes they were read from stay so (the copy encodes to the same bytes), and
   * tensor payloads (raw bytes, typed data, lazily read payloads) are shared, not copied; treat them
   * as read-only and replace a tensor rather than writing into its data.
   */
  clone(): Model { return new ModelCloner().model(this); }

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

/** @internal A graph and its nested subgraphs, depth first, without recursion. */
export function* walkGraphs(graph: Graph): Iterable<Graph> {
  const stack: Graph[] = [graph];
  while (stack.length) {
    const g = stack.pop()!;
    yield g;
    const from = stack.length;
    g._collectSubgraphs(stack);
    // Reversed in place, so the first subgraph is walked first.
    for (let i = from, j = stack.length - 1; i < j; i++, j--) { const t = stack[i]!; stack[i] = stack[j]!; stack[j] = t; }
  }
}

/** Stands for a stored node the original built and then removed: the copy never builds it again. */
const DETACHED = new Node('<removed>');

/** Payload fields of TensorProto: shared between a model and its clone, never copied. */
const SHARED_PAYLOADS = new Set(['raw_data', 'float_data', 'int32_data', 'string_data', 'int64_data', 'double_data', 'uint64_data']);

/** Model.clone(): maps every IR object of a model to its copy, protobuf data included. */
class ModelCloner {
  /** Copies of message objects, so objects shared in the original (a node's kept proto and the message it came from) stay shared in the copy. */
  private readonly objects = new Map<object, unknown>();
  private readonly values = new Map<Value, Value>();
  private readonly nodes = new Map<Node, Node>();
  private readonly graphs = new Map<Graph, Graph>();

  model(model: Model): Model {
    // The decoded graph, function and training messages are not read after decoding (the IR is written instead): shared.
    const proto = this.data(model.proto, ['graph', 'functions', 'training_info']);
    const copy = new Model(proto, this.graph(model.graph, null));
    copy.functions = model.functions.map((f) => {
      const body = this.graph(f.body, null);
      if (f.body._model === model) body._model = copy;
      return new OnnxFunction(this.data(f.proto), body);
    });
    copy.trainingInfo = model.trainingInfo.map((t) => new TrainingInfo(
      this.data(t.proto, ['initialization', 'algorithm']),
      t.initialization && this.graph(t.initialization, this.graphs.get(t.initialization.parentScope!) ?? null),
      t.algorithm && this.graph(t.algorithm, this.graphs.get(t.algorithm.parentScope!) ?? null),
    ));
    for (const [from, to] of this.values) to.graph = from.graph ? this.graphs.get(from.graph) ?? null : null;
    // Uses in the original's order, by the copied nodes only (a node never inserted anywhere is not copied).
    for (const [from, to] of this.values) {
      if (from._lazyUses) continue; // filled in from the copy's store when first asked for
      for (const use of from._usesUnsafe()) {
        const node = this.nodes.get(use.node);
        if (node) to._addUse(node, use.index);
      }
    }
    return copy;
  }

  private graph(graph: Graph, parentScope: Graph | null): Graph {
    const copy = new Graph(this.data(graph.proto));
    this.graphs.set(graph, copy);
    copy.parentScope = parentScope;
    for (const [name, v] of graph._scope) copy._scope.set(name, this.value(v));
    for (const v of graph._inputs) copy._inputs.push(this.value(v));
    for (const v of graph._outputs) copy._outputs.push(this.value(v));
    for (const v of graph.valueInfo) copy.valueInfo.push(this.value(v));
    for (const v of graph._initializers) copy._initializers.push(this.value(v));
    for (const v of graph._sparseInitializers) copy._sparseInitializers.push(this.value(v));
    for (const [list, overrides] of graph.declarationOverrides) {
      copy.declarationOverrides.set(list, new Map([...overrides].map(([v, info]) => [this.value(v), this.data(info)])));
    }
    const store = graph._store;
    if (!store) {
      for (const node of graph) copy._appendDefined(this.node(node, copy));
      return copy;
    }
    // A graph still holding stored nodes: the copy shares the store's read-only index and bytes, and
    // keeps the same nodes unbuilt (copying never builds the original).
    const copyStore = store.copyUnbuilt();
    graph._forEachEntry((node) => copy._appendDefined(this.node(node, copy)), (_, from, to) => copy._appendStored(from, to));
    store.built.forEach((node, k) => { copyStore.built[k] = (node && this.nodes.get(node)) ?? DETACHED; });
    copyStore.builtCount = store.builtCount;
    store.values.forEach((value, id) => {
      if (!value) return;
      const to = this.value(value);
      copyStore.values[id] = to;
      to._store = copyStore;
      to._storeId = id;
      to._lazyProducer = value._lazyProducer;
      if (value._lazyProducer) to.producerIndex = value.producerIndex;
      to._lazyUses = value._lazyUses;
    });
    copy._store = copyStore;
    copyStore.graph = copy;
    return copy;
  }

  private value(value: Value): Value {
    let copy = this.values.get(value);
    if (copy) return copy;
    copy = new Value(value.name);
    this.values.set(value, copy);
    copy.info = this.data(value.info);
    if (value.initializer) copy.initializer = new Tensor(this.data(value.initializer.proto));
    copy.sparseInitializer = this.data(value.sparseInitializer);
    return copy;
  }

  private node(node: Node, graph: Graph): Node {
    const copy = new Node(node.opType, [], [], { proto: this.data(node.proto) });
    this.nodes.set(node, copy);
    copy._adoptOutputs(node.outputs.map((v) => v && this.value(v)));
    copy._setInputsUncounted(node.inputs.map((v) => v && this.value(v)));
    for (const a of node.attributes) {
      const attribute = new Attribute(this.data(a.proto));
      attribute.holdsOneGraph = a.holdsOneGraph;
      for (const sub of a.graphs) {
        const subCopy = this.graph(sub, sub.parentScope ? this.graphs.get(sub.parentScope) ?? graph : graph);
        subCopy.owner = copy;
        attribute.graphs.push(subCopy);
      }
      copy.attributes.push(attribute);
    }
    copy._decodedFrom = this.data(node._decodedFrom);
    copy._srcBytes = node._srcBytes;
    copy._srcStart = node._srcStart;
    copy._srcEnd = node._srcEnd;
    copy._srcAttributes = this.data(node._srcAttributes);
    copy._verbatim = node._verbatim;
    return copy;
  }

  /** A deep copy of protobuf data. Bytes, tensor payloads and immutable values (int64 Longs) are shared. */
  private data<T>(x: T, shared: readonly string[] = []): T {
    if (x === null || typeof x !== 'object' || ArrayBuffer.isView(x)) return x;
    const known = this.objects.get(x);
    if (known !== undefined) return known as T;
    if (Array.isArray(x)) {
      if (Object.isFrozen(x)) return x;
      const copy: unknown[] = [];
      this.objects.set(x, copy);
      for (const item of x) copy.push(this.data(item));
      return copy as T;
    }
    const prototype = Object.getPrototypeOf(x);
    if (prototype !== Object.prototype && prototype !== null && !isMessage(x)) return x;
    const copy = Object.create(prototype) as Record<string, unknown>;
    this.objects.set(x, copy);
    const source = x as Record<string, unknown>;
    for (const key of Object.keys(source)) {
      copy[key] = SHARED_PAYLOADS.has(key) || shared.includes(key) ? source[key] : this.data(source[key]);
    }
    const unknowns = Object.getOwnPropertyDescriptor(source, '$unknowns');
    if (unknowns && !unknowns.enumerable) Object.defineProperty(copy, '$unknowns', { ...unknowns, value: (unknowns.value as Uint8Array[]).slice() });
    return copy as T;
  }
}
