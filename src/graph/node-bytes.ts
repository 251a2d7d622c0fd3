/**
 * NodeProto straight from its wire bytes, for the node lists that make up most of a large graph.
 * The common fields (input, output, name, op_type, domain, attribute) are read here without a
 * protobufjs message per node; a node with any other field is left to protobufjs. An unedited node
 * is written back as its original bytes; whether it is unedited is decided by reading those bytes
 * again and comparing them with the IR, so no snapshot is kept per node.
 * Callers run the structure check (wire.ts) first: lengths and wire types are trusted here.
 */
import protobuf from 'protobufjs/light.js';
import { AttributeProtoType, NodeProtoType, cloneShallow, decodeKeepingUnknowns, type AttributeProto, type NodeProto } from './proto.js';
import { OnnxDecodeError } from './errors.js';
import type { Node, Value } from './ir.js';
import { varintAt } from './varint.js';
import { checkWireStructure } from './wire.js';

const utf8 = protobuf.util.utf8;

const enum Field { Input = 1, Output = 2, Name = 3, OpType = 4, Attribute = 5, Domain = 7 }

/** The fields of one NodeProto, or undefined when it has fields only protobufjs should read. */
export interface NodeFields {
  inputs: string[];
  outputs: string[];
  /** The kept fields the IR does not own (name, op_type, domain), as protobufjs would set them. */
  proto: NodeProto;
  attributes: AttributeProto[] | undefined;
}

/**
 * UTF-8 text as protobufjs reads it, but an ASCII name becomes one flat string (protobufjs appends
 * character by character, which leaves a chain of strings per name to flatten and collect).
 */
function readText(buf: Uint8Array, start: number, end: number): string {
  const length = end - start;
  if (length <= 0) return '';
  if (length > 64) return utf8.read(buf, start, end);
  const codes = codesOfLength[length]!;
  for (let i = 0; i < length; i++) {
    const c = buf[start + i]!;
    if (c >= 0x80) return utf8.read(buf, start, end);
    codes[i] = c;
  }
  return String.fromCharCode.apply(null, codes);
}
// One reusable array per length (changing an array's length is a slow runtime call).
const codesOfLength = Array.from({ length: 65 }, (_, n) => new Array<number>(n).fill(0));

/** Op types and domains repeat across a graph: one string each instead of one per node. */
const interned = new Map<string, string>();
function readInterned(buf: Uint8Array, start: number, end: number): string {
  const text = readText(buf, start, end);
  const known = interned.get(text);
  if (known !== undefined) return known;
  if (interned.size < 4096) interned.set(text, text);
  return text;
}

export function readNodeFields(buf: Uint8Array, start: number, end: number): NodeFields | undefined {
  const inputs: string[] = [];
  const outputs: string[] = [];
  const proto: NodeProto = {};
  let attributes: AttributeProto[] | undefined;
  let pos = start;
  while (pos < end) {
    const tag = buf[pos]!;
    // Every field read here has a one-byte tag and wire type 2; anything else goes to protobufjs.
    if (tag >= 0x80 || (tag & 7) !== 2) return undefined;
    let length = buf[pos + 1]!, body = pos + 2;
    if (length >= 0x80) [length, body] = varintAt(buf, pos + 1); // one-byte lengths inline: no tuple per field
    const bodyEnd = body + length;
    switch (tag >>> 3) {
      case Field.Input: inputs.push(readText(buf, body, bodyEnd)); break;
      case Field.Output: outputs.push(readText(buf, body, bodyEnd)); break;
      case Field.Name:
        if (proto.name !== undefined) return undefined;
        proto.name = readText(buf, body, bodyEnd); break;
      case Field.OpType:
        if (proto.op_type !== undefined) return undefined;
        proto.op_type = readInterned(buf, body, bodyEnd); break;
      case Field.Domain:
        if (proto.domain !== undefined) return undefined;
        proto.domain = readInterned(buf, body, bodyEnd); break;
      case Field.Attribute:
        (attributes ??= []).push(decodeKeepingUnknowns<AttributeProto>(AttributeProtoType, buf.subarray(body, bodyEnd), 'NodeProto.attribute', body));
        break;
      default: return undefined;
    }
    pos = bodyEnd;
  }
  return { inputs, outputs, proto, attributes };
}

/** Whether `text` is exactly the UTF-8 bytes buf[start, end). */
function sameText(text: string, buf: Uint8Array, start: number, end: number): boolean {
  if (text.length === end - start) {
    let ascii = true;
    for (let i = 0; i < text.length; i++) {
      const c = text.charCodeAt(i);
      if (c >= 0x80) { ascii = false; break; }
      if (c !== buf[start + i]) return false;
    }
    if (ascii) return true;
  }
  // Non-ASCII (or lengths that only agree after decoding): compare the decoded text.
  return text.length <= end - start && utf8.read(buf, start, end) === text;
}

const nameOf = (v: Value | null | undefined) => v?.name ?? '';

/**
 * Whether `node` still holds exactly what its source bytes say: op type, name, domain, input and
 * output names, the same attribute messages, and no other kept field.
 */
export function unchangedFromBytes(node: Node, buf: Uint8Array, start: number, end: number, attributeProtos: readonly AttributeProto[] | undefined): boolean {
  const proto = node.proto as Record<string, unknown>;
  let inputs = 0, outputs = 0, attributes = 0, kept = 0;
  let pos = start;
  while (pos < end) {
    const tag = buf[pos]!;
    let length = buf[pos + 1]!, body = pos + 2;
    if (length >= 0x80) [length, body] = varintAt(buf, pos + 1); // one-byte lengths inline: no tuple per field
    const bodyEnd = body + length;
    switch (tag >>> 3) {
      case Field.Input:
        if (inputs >= node.inputs.length || !sameText(nameOf(node.inputs[inputs++]), buf, body, bodyEnd)) return false;
        break;
      case Field.Output:
        if (outputs >= node.outputs.length || !sameText(nameOf(node.outputs[outputs++]), buf, body, bodyEnd)) return false;
        break;
      case Field.Name:
        if (typeof proto['name'] !== 'string' || !sameText(proto['name'], buf, body, bodyEnd)) return false;
        kept++; break;
      case Field.OpType:
        if (proto['op_type'] !== node.opType || !sameText(node.opType, buf, body, bodyEnd)) return false;
        kept++; break;
      case Field.Domain:
        if (typeof proto['domain'] !== 'string' || !sameText(proto['domain'], buf, body, bodyEnd)) return false;
        kept++; break;
      case Field.Attribute: {
        const a = node.attributes[attributes];
        if (!a || a.graphs.length || a.proto !== attributeProtos?.[attributes]) return false;
        attributes++; break;
      }
      default: return false;
    }
    pos = bodyEnd;
  }
  if (inputs !== node.inputs.length || outputs !== node.outputs.length || attributes !== node.attributes.length) return false;
  if (!Object.hasOwn(proto, 'op_type') && node.opType !== '') return false;
  return Object.keys(proto).length === kept && !Object.hasOwn(proto, '$unknowns');
}

/** NodeProto fields the IR owns (the rest stay in `node.proto`). */
export const NODE_FIELDS_IN_IR: ReadonlySet<string> = new Set(['input', 'output', 'attribute']);

/** A NodeProto body read from bytes: by the fast reader, or (`decoded`) by protobufjs when it has other fields. */
export interface NodeBody extends NodeFields { decoded?: NodeProto }

/** Reads the NodeProto body bytes[from, to) (structure already checked). */
export function readNodeBody(bytes: Uint8Array, from: number, to: number): NodeBody {
  const fields = readNodeFields(bytes, from, to);
  if (fields) return fields;
  const decoded = decodeKeepingUnknowns<NodeProto>(NodeProtoType, bytes.subarray(from, to), 'ModelProto.graph.node', from);
  return { inputs: decoded.input ?? [], outputs: decoded.output ?? [], proto: copyWithout(decoded, NODE_FIELDS_IN_IR), attributes: decoded.attribute, decoded };
}

/** Records where `node` was read from, so that it is written back as those bytes while unchanged. */
export function keepNodeSource(node: Node, body: NodeBody, bytes: Uint8Array, from: number, to: number): void {
  if (body.decoded) {
    node._decodedFrom = body.decoded;
    node._verbatim = bytes.subarray(from, to);
  } else {
    node._srcBytes = bytes;
    node._srcStart = from;
    node._srcEnd = to;
    node._srcAttributes = body.attributes;
  }
}

/** A copy without the fields the IR owns (built up rather than deleted from, which keeps objects fast). */
export function copyWithout<T extends object>(proto: T, skip: ReadonlySet<string>): T {
  const kept: Record<string, unknown> = {};
  for (const key of Object.keys(proto)) if (!skip.has(key)) kept[key] = (proto as Record<string, unknown>)[key];
  const unknowns = (proto as { $unknowns?: unknown }).$unknowns;
  if (unknowns) kept['$unknowns'] = unknowns;
  return kept as T;
}

/** Whether encoding `node` would give back `source`, the message it was decoded from (or adopted as). */
export function unchangedSince(node: Node, source: NodeProto): boolean {
  if (node.opType !== (source.op_type ?? '') || (node.opType === '' && Object.hasOwn(source, 'op_type'))) return false;
  if (!sameNames(node.inputs, source.input) || !sameNames(node.outputs, source.output)) return false;
  const attrs = source.attribute ?? [];
  if (node.attributes.length !== attrs.length) return false;
  for (let i = 0; i < attrs.length; i++) {
    const a = node.attributes[i]!;
    if (a.graphs.length || a.proto !== attrs[i]) return false;
  }
  // The kept copy must still hold exactly the source's other fields.
  let kept = 0;
  // `$unknowns` is compared below: it is enumerable on a kept copy and not on a decoded message.
  for (const key of Object.keys(node.proto)) {
    if (key === '$unknowns') continue;
    if ((node.proto as Record<string, unknown>)[key] !== (source as Record<string, unknown>)[key]) return false;
    kept++;
  }
  let others = 0;
  for (const key of Object.keys(source)) if (!NODE_FIELDS_IN_IR.has(key) && key !== '$unknowns') others++;
  return kept === others && (node.proto as { $unknowns?: unknown }).$unknowns === (source as { $unknowns?: unknown }).$unknowns;
}

function sameNames(values: readonly (Value | null)[], names: readonly string[] | undefined): boolean {
  const list = names ?? [];
  if (values.length !== list.length) return false;
  for (let i = 0; i < list.length; i++) if ((values[i]?.name ?? '') !== list[i]) return false;
  return true;
}

/**
 * A NodeProto that protobufjs writes as exactly `body` (the fields of a node, as they were read):
 * protobufjs writes a message's unknown-field bytes verbatim, and this one has nothing else.
 */
export function verbatimNode(body: Uint8Array): NodeProto {
  const message: NodeProto = {};
  Object.defineProperty(message, '$unknowns', { value: [body], writable: true, configurable: true });
  return message;
}

/** The NodeProto bodies `node` is written as while unchanged; undefined when it is encoded from the IR. */
export function nodeSourceBytes(node: Node): Uint8Array | undefined {
  const src = node._srcBytes;
  if (src) return unchangedFromBytes(node, src, node._srcStart, node._srcEnd, node._srcAttributes) ? src.subarray(node._srcStart, node._srcEnd) : undefined;
  const source = node._decodedFrom;
  return node._verbatim && source && unchangedSince(node, source) ? node._verbatim : undefined;
}

/**
 * Makes `node` be written as `body` (NodeProto field bytes, as sourceBytes() gave them) when those
 * bytes decode to exactly what the node holds now. Nodes holding subgraphs are always encoded from
 * the IR (their subgraphs may change without the node knowing), so they return false.
 */
export function adoptNodeBytes(node: Node, body: Uint8Array): boolean {
  if (!(body instanceof Uint8Array)) return false;
  for (const a of node.attributes) if (a.graphs.length) return false;
  let decoded: NodeProto;
  try {
    checkWireStructure(body, NodeProtoType);
    decoded = decodeKeepingUnknowns<NodeProto>(NodeProtoType, body);
  } catch (error) {
    if (error instanceof OnnxDecodeError) return false;
    throw error;
  }
  if (node.opType !== '' && !Object.hasOwn(node.proto, 'op_type')) node.proto.op_type = node.opType;
  const current = cloneShallow(node.proto);
  current.input = node.inputs.map((v) => v?.name ?? '');
  current.output = node.outputs.map((v) => v?.name ?? '');
  current.attribute = node.attributes.map((a) => a.proto);
  if (!sameBytes(NodeProtoType.encode(decoded as protobuf.Message).finish(), NodeProtoType.encode(current as protobuf.Message).finish())) return false;
  node._srcBytes = undefined;
  node._srcAttributes = undefined;
  node._decodedFrom = current;
  node._verbatim = body.slice();
  return true;
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}
