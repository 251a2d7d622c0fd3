/**
 * The main graph's nodes as they lie in the model bytes: byte ranges, op types and value names as
 * integer ids, and producer / use counts in typed arrays. A graph decoded from bytes starts with
 * all its nodes here and builds a `Node` object only for a node someone reaches (ir.ts, Graph);
 * the rest are written back as their bytes. Reading the node list is also its structure check:
 * anything this reader does not take as sound sends the whole model to the full check (wire.ts),
 * which reports where it broke.
 */
import protobuf from 'protobufjs/light.js';
import { AttributeProtoType, NodeProtoType } from './proto.js';
import { isSoundMessage } from './wire.js';
import type { Graph, Node, Value } from './ir.js';

/** Interns byte strings of one buffer: equal bytes get one id, and no JS string is made until asked for. */
export class ByteNames {
  count = 0;
  start: Int32Array;
  end: Int32Array;
  /** @internal */
  private hashes: Int32Array;
  /** Open addressing: id + 1 per slot, 0 when empty. */
  /** @internal */
  private slots: Int32Array;
  /** @internal */
  private texts: (string | undefined)[] = [];
  /** @internal */
  private scratch = new Uint8Array(256);

  /** @internal */
  private readonly buf: Uint8Array;

  constructor(buf: Uint8Array, expected: number) {
    this.buf = buf;
    const capacity = Math.max(16, expected);
    this.start = new Int32Array(capacity);
    this.end = new Int32Array(capacity);
    this.hashes = new Int32Array(capacity);
    this.slots = new Int32Array(tableSize(capacity));
  }

  /** The id of the bytes buf[start, end), added when new. */
  intern(start: number, end: number): number {
    const buf = this.buf;
    let h = 0x811c9dc5 | 0;
    for (let i = start; i < end; i++) h = Math.imul(h ^ buf[i]!, 16777619);
    return this.internHashed(start, end, h);
  }

  /** intern() with the bytes' hash (hashBytes) already known. */
  internHashed(start: number, end: number, h: number): number {
    const buf = this.buf;
    const mask = this.slots.length - 1;
    const length = end - start;
    for (let slot = h & mask; ; slot = (slot + 1) & mask) {
      const entry = this.slots[slot]!;
      if (entry === 0) return this.add(start, end, h, slot);
      const id = entry - 1;
      if (this.hashes[id] !== h) continue;
      const s = this.start[id]!;
      if (this.end[id]! - s !== length) continue;
      let same = true;
      for (let i = 0; i < length; i++) if (buf[s + i] !== buf[start + i]) { same = false; break; }
      if (same) return id;
    }
  }

  /** The id of `text`, or -1 when these bytes hold no such name. */
  find(text: string): number {
    let bytes = this.scratch;
    if (text.length * 3 > bytes.length) bytes = this.scratch = new Uint8Array(text.length * 3);
    let length = text.length;
    // ASCII (nearly every name) is its own UTF-8: no encoder call.
    for (let i = 0; i < length; i++) {
      const c = text.charCodeAt(i);
      if (c >= 0x80) { length = utf8Encoder.encodeInto(text, bytes).written!; break; }
      bytes[i] = c;
    }
    let h = 0x811c9dc5 | 0;
    for (let i = 0; i < length; i++) h = Math.imul(h ^ bytes[i]!, 16777619);
    const mask = this.slots.length - 1;
    const buf = this.buf;
    for (let slot = h & mask; ; slot = (slot + 1) & mask) {
      const entry = this.slots[slot]!;
      if (entry === 0) return -1;
      const id = entry - 1;
      const s = this.start[id]!;
      if (this.hashes[id] !== h || this.end[id]! - s !== length) continue;
      let same = true;
      for (let i = 0; i < length; i++) if (buf[s + i] !== bytes[i]) { same = false; break; }
      if (same) return id;
    }
  }

  text(id: number): string {
    return this.texts[id] ??= decodeText(this.buf, this.start[id]!, this.end[id]!);
  }

  /** Whether name `id` starts with the UTF-8 bytes `prefix`. */
  startsWith(id: number, prefix: Uint8Array): boolean { return bytesStartWith(this.buf, this.start[id]!, this.end[id]!, prefix); }

  /** @internal */
  private add(start: number, end: number, hash: number, slot: number): number {
    const id = this.count++;
    if (id === this.start.length) {
      this.start = grow(this.start);
      this.end = grow(this.end);
      this.hashes = grow(this.hashes);
    }
    this.start[id] = start;
    this.end[id] = end;
    this.hashes[id] = hash;
    this.slots[slot] = id + 1;
    if (this.count * 2 > this.slots.length) this.rehash();
    return id;
  }

  /** @internal */
  private rehash(): void {
    const slots = new Int32Array(this.slots.length * 2);
    const mask = slots.length - 1;
    for (let id = 0; id < this.count; id++) {
      let slot = this.hashes[id]! & mask;
      while (slots[slot] !== 0) slot = (slot + 1) & mask;
      slots[slot] = id + 1;
    }
    this.slots = slots;
  }
}

const utf8Encoder = new TextEncoder();
/** Text as protobufjs reads it (a built node's fields come from it), so bytes that are not UTF-8 read the same both ways. */
const decodeText = (buf: Uint8Array, start: number, end: number): string => protobuf.util.utf8.read(buf, start, end);
export const utf8Bytes = (text: string): Uint8Array => utf8Encoder.encode(text);

function tableSize(capacity: number): number {
  let size = 32;
  while (size < capacity * 2) size *= 2;
  return size;
}

function grow(array: Int32Array): Int32Array {
  const bigger = new Int32Array(array.length * 2);
  bigger.set(array);
  return bigger;
}

function bytesStartWith(buf: Uint8Array, start: number, end: number, prefix: Uint8Array): boolean {
  if (end - start < prefix.length) return false;
  for (let i = 0; i < prefix.length; i++) if (buf[start + i] !== prefix[i]) return false;
  return true;
}

/** Whether buf[start, end) is well-formed UTF-8 (protobufjs would decode anything else lossily, so two byte strings could become one name). */
function isWellFormedUtf8(buf: Uint8Array, start: number, end: number): boolean {
  for (let i = start; i < end;) {
    const b = buf[i]!;
    if (b < 0x80) { i++; continue; }
    let need: number, min: number, cp: number;
    if (b >= 0xc2 && b <= 0xdf) { need = 1; min = 0x80; cp = b & 0x1f; }
    else if (b >= 0xe0 && b <= 0xef) { need = 2; min = 0x800; cp = b & 0x0f; }
    else if (b >= 0xf0 && b <= 0xf4) { need = 3; min = 0x10000; cp = b & 0x07; }
    else return false;
    if (i + need >= end) return false;
    for (let j = 1; j <= need; j++) {
      const c = buf[i + j]!;
      if ((c & 0xc0) !== 0x80) return false;
      cp = cp * 64 + (c & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return false;
    i += need + 1;
  }
  return true;
}

/** Flags per stored node. */
export const NodeFlag = { Subgraph: 1, Tensor: 2 } as const;

const enum Field { Input = 1, Output = 2, Name = 3, OpType = 4, Attribute = 5, DocString = 6, Domain = 7, Overload = 8, MetadataProps = 9, DeviceConfigurations = 10 }

/** NodeProto bodies sit three messages deep (model, graph, node): attributes are walked from there for the nesting limit. */
const NODE_DEPTH = 3;

export class NodeStore {
  readonly count: number;
  readonly bodyStart: Uint32Array;
  readonly bodyEnd: Uint32Array;
  /** Where the node's entry (tag and minimal length prefix) begins, or -1 when its prefix is not minimal. */
  readonly entryStart: Int32Array;
  readonly op: Int32Array;
  readonly ops: ByteNames;
  readonly nameStart: Int32Array;
  readonly nameEnd: Int32Array;
  readonly flags: Uint8Array;
  /** Input names of node k: inIds[inFrom[k], inFrom[k + 1]) (-1 for an absent optional input); likewise outputs. */
  readonly inFrom: Uint32Array;
  inIds: Int32Array;
  readonly outFrom: Uint32Array;
  outIds: Int32Array;
  readonly names: ByteNames;
  /** Per name id: the node writing it and which output, or -1. */
  producer: Int32Array;
  producerSlot: Int32Array;
  useCount: Int32Array;
  /** Per name id, the Value made for it (by the graph; undefined until someone reaches it). */
  values: (Value | undefined)[] = [];
  /** The graph whose nodes these are. */
  graph: Graph | undefined;
  builtCount = 0;
  /** Per node, the Node built for it. */
  built: (Node | undefined)[];
  /** @internal */
  private useStart: Int32Array | undefined;
  /** @internal */
  private useNode: Int32Array | undefined;
  /** @internal */
  private useSlot: Int32Array | undefined;

  constructor(readonly bytes: Uint8Array, ranges: readonly number[]) {
    const n = ranges.length / 2;
    this.count = n;
    this.bodyStart = new Uint32Array(n);
    this.bodyEnd = new Uint32Array(n);
    this.entryStart = new Int32Array(n);
    this.op = new Int32Array(n);
    this.nameStart = new Int32Array(n);
    this.nameEnd = new Int32Array(n);
    this.flags = new Uint8Array(n);
    this.inFrom = new Uint32Array(n + 1);
    this.outFrom = new Uint32Array(n + 1);
    this.inIds = new Int32Array(Math.max(16, n * 2));
    this.outIds = new Int32Array(Math.max(16, n + 16));
    this.names = new ByteNames(bytes, n + 16);
    this.ops = new ByteNames(bytes, 64);
    this.producer = new Int32Array(0);
    this.producerSlot = new Int32Array(0);
    this.useCount = new Int32Array(0);
    this.built = new Array<Node | undefined>(n);
  }

  /** A store over the same nodes for a copy of the graph: the read-only index and bytes shared, nothing built or made. */
  copyUnbuilt(): NodeStore {
    const copy = Object.assign(Object.create(NodeStore.prototype) as NodeStore, this);
    copy.values = new Array<Value | undefined>(this.names.count);
    copy.built = new Array<Node | undefined>(this.count);
    copy.builtCount = 0;
    copy.graph = undefined;
    return copy;
  }

  /** The uses of name `id` as (node, input index) pairs in node order: uses(id)[0..] = [node0, slot0, node1, slot1, ...] from `usesFrom`. */
  usesOf(id: number): { nodes: Int32Array; slots: Int32Array; from: number; to: number } {
    if (!this.useStart) this.indexUses();
    return { nodes: this.useNode!, slots: this.useSlot!, from: this.useStart![id]!, to: this.useStart![id + 1]! };
  }

  /** @internal */
  private indexUses(): void {
    const names = this.names.count;
    const start = new Int32Array(names + 1);
    for (let id = 0; id < names; id++) start[id + 1] = start[id]! + this.useCount[id]!;
    const fill = start.slice(0, names);
    const total = start[names]!;
    const nodes = new Int32Array(total), slots = new Int32Array(total);
    for (let k = 0; k < this.count; k++) {
      const from = this.inFrom[k]!, to = this.inFrom[k + 1]!;
      for (let j = from; j < to; j++) {
        const id = this.inIds[j]!;
        if (id < 0) continue;
        const at = fill[id]!++;
        nodes[at] = k;
        slots[at] = j - from;
      }
    }
    this.useStart = start;
    this.useNode = nodes;
    this.useSlot = slots;
  }

  /** Whether node k's name starts with the UTF-8 bytes `prefix` (unnamed nodes never do). */
  nameStartsWith(k: number, prefix: Uint8Array): boolean {
    const s = this.nameStart[k]!;
    return s >= 0 && bytesStartWith(this.bytes, s, this.nameEnd[k]!, prefix);
  }

  nodeName(k: number): string | undefined {
    const s = this.nameStart[k]!;
    return s < 0 ? undefined : decodeText(this.bytes, s, this.nameEnd[k]!);
  }
}

/**
 * Reads the main graph's node bodies (ranges of `bytes`, as pairs) into a NodeStore, checking
 * their structure as it goes. Undefined when a body is not plainly sound (the caller then runs
 * the full structure check, which either reports the fault or passes, and decodes eagerly), or
 * when the graph is one the store does not hold: nodes with subgraphs, a name written twice, a
 * name that is not UTF-8.
 */
export function readNodeStore(bytes: Uint8Array, ranges: readonly number[]): NodeStore | undefined {
  const store = new NodeStore(bytes, ranges);
  const reader = new NodeReader(store);
  const n = store.count;
  for (let k = 0; k < n; k++) if (!reader.read(k, ranges[2 * k]!, ranges[2 * k + 1]!)) return undefined;
  store.inFrom[n] = reader.ins;
  store.outFrom[n] = reader.outs;
  store.inIds = reader.inIds;
  store.outIds = reader.outIds;
  if (!indexNames(store)) return undefined;
  return store;
}

/** Reads one node body at a time into the store (a small method the JIT optimises early, not one long loop). */
class NodeReader {
  ins = 0;
  outs = 0;
  inIds: Int32Array;
  outIds: Int32Array;
  private readonly bytes: Uint8Array;
  private readonly names: ByteNames;
  private readonly emptyOp: number;
  constructor(private readonly store: NodeStore) {
    this.bytes = store.bytes;
    this.names = store.names;
    this.inIds = store.inIds;
    this.outIds = store.outIds;
    this.emptyOp = store.ops.intern(0, 0);
  }

  /** False when the body is not plainly sound (the full check then says why). */
  read(k: number, start: number, end: number): boolean {
    const store = this.store, bytes = this.bytes;
    store.bodyStart[k] = start;
    store.bodyEnd[k] = end;
    store.entryStart[k] = entryStartOf(bytes, start, end);
    store.inFrom[k] = this.ins;
    store.outFrom[k] = this.outs;
    store.nameStart[k] = -1;
    let op = this.emptyOp, flags = 0;
    for (let pos = start; pos < end;) {
      const tag = bytes[pos++]!;
      // Every NodeProto field is numbered below 16 (one-byte tag) and length-delimited; anything else takes the full check.
      if (tag >= 0x80 || (tag & 7) !== 2 || tag < 8) return false;
      let length = bytes[pos++]!;
      if (length >= 0x80) {
        length = this.longLength(pos, end, length);
        if (length < 0) return false;
        pos = this.after;
      }
      if (pos > end || length > end - pos) return false;
      const bodyEnd = pos + length;
      switch (tag >>> 3) {
        case Field.Input:
        case Field.Output: {
          // The name's hash and an ASCII test in one pass, inline: this runs for every name of the graph,
          // mostly before the JIT has optimised anything.
          let id = -1;
          if (bodyEnd > pos) {
            let h = 0x811c9dc5 | 0, high = 0;
            for (let i = pos; i < bodyEnd; i++) { const b = bytes[i]!; high |= b; h = Math.imul(h ^ b, 16777619); }
            if (high >= 0x80 && !isWellFormedUtf8(bytes, pos, bodyEnd)) return false;
            id = this.names.internHashed(pos, bodyEnd, h);
          }
          if (tag === Field.Input * 8 + 2) this.addInput(id); else this.addOutput(id);
          break;
        }
        case Field.Name:
          store.nameStart[k] = pos;
          store.nameEnd[k] = bodyEnd;
          break;
        case Field.OpType: op = store.ops.intern(pos, bodyEnd); break;
        case Field.Attribute:
          // Attributes of numbers and strings are checked here; those holding messages by the wire walker.
          if (!isPlainAttribute(bytes, pos, bodyEnd)) {
            if (!isSoundMessage(bytes, AttributeProtoType, pos, bodyEnd, NODE_DEPTH)) return false;
            flags |= attributeFlags(bytes, pos, bodyEnd);
          }
          break;
        case Field.MetadataProps:
        case Field.DeviceConfigurations:
          if (!isSoundMessage(bytes, messageType(tag >>> 3), pos, bodyEnd, NODE_DEPTH)) return false;
          break;
        default: break; // doc_string, domain, overload, unknown fields: bytes kept as they are
      }
      pos = bodyEnd;
    }
    store.op[k] = op;
    store.flags[k] = flags;
    return true;
  }

  private addInput(id: number): void {
    if (this.ins === this.inIds.length) this.inIds = grow(this.inIds);
    this.inIds[this.ins++] = id;
  }
  private addOutput(id: number): void {
    if (this.outs === this.outIds.length) this.outIds = grow(this.outIds);
    this.outIds[this.outs++] = id;
  }

  private after = 0;
  /** A length prefix of two to five bytes whose first byte is `first`; -1 when it runs out or is too long. `after` is set past it. */
  private longLength(pos: number, end: number, first: number): number {
    let length = first & 0x7f, scale = 128;
    for (let i = 1; ; i++) {
      if (i >= 5 || pos >= end) return -1;
      const b = this.bytes[pos++]!;
      length += (b & 0x7f) * scale;
      scale *= 128;
      if (b < 0x80) break;
    }
    this.after = pos;
    return length;
  }

}

function messageType(field: number): protobuf.Type {
  return NodeProtoType.fieldsById[field]!.resolvedType as protobuf.Type;
}

/** Producers and use counts per name; false when a name is written twice (the eager decoder keeps the first). */
function indexNames(store: NodeStore): boolean {
  const count = store.names.count;
  const producer = new Int32Array(count).fill(-1);
  const producerSlot = new Int32Array(count);
  const useCount = new Int32Array(count);
  for (let k = 0; k < store.count; k++) {
    const from = store.outFrom[k]!, to = store.outFrom[k + 1]!;
    for (let j = from; j < to; j++) {
      const id = store.outIds[j]!;
      if (id < 0) continue;
      if (producer[id] !== -1) return false;
      producer[id] = k;
      producerSlot[id] = j - from;
    }
  }
  const ins = store.inFrom[store.count]!;
  for (let j = 0; j < ins; j++) {
    const id = store.inIds[j]!;
    if (id >= 0) useCount[id]!++;
  }
  store.producer = producer;
  store.producerSlot = producerSlot;
  store.useCount = useCount;
  store.values = new Array<Value | undefined>(count);
  return true;
}

/** Wire type of each AttributeProto field that holds no message; -1 for packed-capable repeated scalars' element width checks below. */
const PLAIN_ATTRIBUTE_WIRE: Readonly<Record<number, number>> = { 1: 2, 2: 5, 3: 0, 4: 2, 7: 5, 8: 0, 9: 2, 13: 2, 20: 0, 21: 2 };

/**
 * Whether an AttributeProto body is sound and holds only numbers and strings (no tensor, graph or
 * type, no unknown field): the common case, checked without the wire walker. False means "ask the
 * walker", not "unsound".
 */
function isPlainAttribute(buf: Uint8Array, start: number, end: number): boolean {
  for (let pos = start; pos < end;) {
    let tag = buf[pos++]!;
    if (tag >= 0x80) {
      if (pos >= end || buf[pos]! >= 0x80) return false; // two-byte tags cover fields 16 to 2047: enough here
      tag = (tag & 0x7f) + buf[pos++]! * 128;
    }
    const wire = tag & 7, field = tag >>> 3;
    const expected = PLAIN_ATTRIBUTE_WIRE[field];
    if (expected === undefined) return false;
    if (wire === 2) {
      if ((expected !== 2 && field !== 7 && field !== 8)) return false;
      let length = 0, scale = 1, i = 0;
      for (;; i++) {
        if (i >= 5 || pos >= end) return false;
        const b = buf[pos++]!;
        length += (b & 0x7f) * scale;
        scale *= 128;
        if (b < 0x80) break;
      }
      if (length > end - pos || length >= 2 ** 31) return false;
      const bodyEnd = pos + length;
      if (field === 7 && length % 4 !== 0) return false; // packed floats
      if (field === 8 && !wellFormedVarints(buf, pos, bodyEnd)) return false; // packed ints
      pos = bodyEnd;
    } else if (wire !== expected) {
      return false;
    } else if (wire === 5) {
      if (end - pos < 4) return false;
      pos += 4;
    } else {
      let i = 0;
      for (;; i++) {
        if (i >= 10 || pos >= end) return false;
        if (buf[pos++]! < 0x80) break;
      }
    }
  }
  return true;
}

function wellFormedVarints(buf: Uint8Array, start: number, end: number): boolean {
  for (let pos = start, bytes = 0; pos < end; pos++) {
    bytes = buf[pos]! >= 0x80 ? bytes + 1 : 0;
    if (bytes >= 10) return false;
  }
  return end === start || buf[end - 1]! < 0x80;
}

/** AttributeProto fields that hold graphs (g, graphs) or tensors (t, tensors, sparse_tensor, sparse_tensors), in checked bytes. */
function attributeFlags(buf: Uint8Array, start: number, end: number): number {
  let flags = 0;
  for (let pos = start; pos < end;) {
    let tag = 0, scale = 1;
    for (;;) { const b = buf[pos++]!; tag += (b & 0x7f) * scale; if (b < 0x80) break; scale *= 128; }
    const wire = tag % 8, field = (tag - wire) / 8;
    if (wire === 2 && (field === 6 || field === 11)) flags |= NodeFlag.Subgraph;
    if (wire === 2 && (field === 5 || field === 10 || field === 22 || field === 23)) flags |= NodeFlag.Tensor;
    if (wire === 0) { while (buf[pos++]! >= 0x80); }
    else if (wire === 1) pos += 8;
    else if (wire === 5) pos += 4;
    else {
      let length = 0; scale = 1;
      for (;;) { const b = buf[pos++]!; length += (b & 0x7f) * scale; if (b < 0x80) break; scale *= 128; }
      pos += length;
    }
  }
  return flags;
}

/** Where the entry (tag 1, minimal length prefix) of the node body at [start, end) begins, or -1. */
export function entryStartOf(buf: Uint8Array, start: number, end: number): number {
  let length = end - start, size = 1;
  while (length >= 0x80) { length = Math.floor(length / 128); size++; }
  const at = start - 1 - size;
  if (at < 0 || buf[at] !== 1 * 8 + 2) return -1;
  let value = end - start;
  for (let i = 0; i < size; i++) {
    const expected = i === size - 1 ? value : (value % 128) | 0x80;
    if (buf[at + 1 + i] !== expected) return -1;
    value = Math.floor(value / 128);
  }
  return at;
}
