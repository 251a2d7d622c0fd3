/**
 * A schema-driven walk over protobuf wire bytes that checks structure before anything is
 * decoded: every tag, wire type and length prefix is checked against the bytes that are really
 * there, so corrupt input fails with the field path and byte offset instead of a crash, a hang
 * or an allocation sized by a lying length prefix. Payload bytes are skipped, not read.
 */
import type protobuf from 'protobufjs/light.js';
import { OnnxDecodeError } from './errors.js';

const MAX_DEPTH = 100;

const enum Wire { Varint = 0, Fixed64 = 1, Bytes = 2, StartGroup = 3, EndGroup = 4, Fixed32 = 5 }

const VARINT_SCALARS = new Set(['int32', 'int64', 'uint32', 'uint64', 'sint32', 'sint64', 'bool']);
const FIXED32_SCALARS = new Set(['float', 'fixed32', 'sfixed32']);
const FIXED64_SCALARS = new Set(['double', 'fixed64', 'sfixed64']);

/** What the walk needs to know about a field, looked up by field number. */
interface FieldLayout { name: string; repeated: boolean; child: protobuf.Type | undefined; wire: Wire }
const layouts = new WeakMap<protobuf.Type, (FieldLayout | undefined)[]>();

function layoutOf(type: protobuf.Type): (FieldLayout | undefined)[] {
  let layout = layouts.get(type);
  if (layout) return layout;
  layout = [];
  for (const field of type.fieldsArray) {
    const resolved = field.resolve().resolvedType;
    const child = resolved && 'fieldsById' in resolved ? resolved as protobuf.Type : undefined;
    const scalar = resolved ? 'int32' : field.type; // enums travel as varints
    const wire = VARINT_SCALARS.has(scalar) ? Wire.Varint
      : FIXED32_SCALARS.has(scalar) ? Wire.Fixed32
      : FIXED64_SCALARS.has(scalar) ? Wire.Fixed64 : Wire.Bytes;
    layout[field.id] = { name: field.name, repeated: field.repeated, child, wire };
  }
  layouts.set(type, layout);
  return layout;
}

interface Frame { type: protobuf.Type; start: number; fieldNo: number; tagAt: number }

class WireWalker {
  private readonly stack: Frame[] = [];
  /** Leave the bodies of ModelProto.graph.node unwalked (their lengths are still checked): the node store checks them as it reads them. */
  skipMainGraphNodes = false;
  constructor(private readonly buf: Uint8Array) {}

  fail(reason: string, offset: number): never {
    throw new OnnxDecodeError(reason, this.path(), offset);
  }

  /** Builds the field path only when an error is reported, so the happy path stays cheap. */
  private path(): string {
    let text = this.stack.length ? this.stack[0]!.type.name : 'message';
    for (let i = 1; i < this.stack.length; i++) {
      const parent = this.stack[i - 1]!;
      const child = this.stack[i]!;
      const field = parent.type.fieldsById[child.fieldNo];
      const name = field ? field.name : `#${child.fieldNo}`;
      text += field?.repeated ? `.${name}[${this.countBefore(parent.start, child.tagAt, child.fieldNo)}]` : `.${name}`;
    }
    return text;
  }

  private countBefore(start: number, end: number, fieldNo: number): number {
    let count = 0;
    let pos = start;
    while (pos < end) {
      const tag = this.varint(pos, end);
      if ((tag - (tag % 8)) / 8 === fieldNo) count++;
      pos = this.skip(tag % 8, this.after, end);
    }
    return count;
  }

  /** Where the last varint read (varint, tag, delimited's body) ended: a field, not a tuple per read. */
  private after = 0;

  /** Reads a varint as a JS number (exact below 2^53; enough for tags and lengths); `after` is set past it. */
  varint(pos: number, end: number): number {
    let result = 0;
    let scale = 1;
    for (let i = 0; i < 10; i++) {
      if (pos >= end) this.fail('a varint runs past the end of its field', pos);
      const byte = this.buf[pos++]!;
      result += (byte & 0x7f) * scale;
      if (byte < 0x80) { this.after = pos; return result; }
      scale *= 128;
    }
    return this.fail('a varint is longer than 10 bytes', pos);
  }

  /**
   * A field tag. Protobuf tags are 32-bit: at most 5 bytes and below 2^32 (field numbers up to
   * 2^29 - 1); protobufjs refuses anything else, so it is refused here with a path.
   */
  private tag(pos: number, end: number): number {
    const tag = this.varint(pos, end);
    if (this.after - pos > 5 || tag >= 2 ** 32) this.fail('invalid field tag (longer than 5 bytes or above 2^32)', pos);
    return tag;
  }

  /**
   * A length-delimited value at `pos`: returns its body's end, and `after` is its body's start. The
   * length must fit (else the error says what it claims, naming `field` when given) and be a
   * protobuf length: below 2^31, at most 5 bytes, as protobufjs reads it.
   */
  private delimited(pos: number, end: number, field?: string): number {
    let len: number, body: number;
    const first = this.buf[pos];
    if (first !== undefined && first < 0x80 && pos < end) { len = first; body = pos + 1; } // one-byte lengths: most of them
    else { len = this.varint(pos, end); body = this.after; }
    if (len > end - body) this.failNeed(body, len, end, field === undefined ? undefined : `field ${field}`);
    if (body - pos > 5 || len >= 2 ** 31) this.fail('invalid length prefix (longer than 5 bytes or above 2^31)', pos);
    this.after = body;
    return body + len;
  }

  private skip(wire: number, pos: number, end: number): number {
    switch (wire) {
      case Wire.Varint: this.varint(pos, end); return this.after;
      case Wire.Fixed64: return this.need(pos, 8, end);
      case Wire.Fixed32: return this.need(pos, 4, end);
      case Wire.Bytes: return this.delimited(pos, end);
      case Wire.StartGroup:
      case Wire.EndGroup:
        return this.fail('group wire type (ONNX never uses protobuf groups)', pos);
      default:
        return this.fail(`invalid wire type ${wire}`, pos);
    }
  }

  private need(pos: number, len: number, end: number): number {
    if (len > end - pos) this.failNeed(pos, len, end, undefined);
    return pos + len;
  }

  private failNeed(pos: number, len: number, end: number, label = 'a field'): never {
    return this.fail(`${label} claims ${len} bytes but only ${Math.max(0, end - pos)} remain`, pos);
  }

  /** Walks a message as if `depth` messages enclosed it (for the nesting limit). */
  walkAtDepth(type: protobuf.Type, start: number, end: number, depth: number): void {
    for (let i = 0; i < depth; i++) this.stack.push({ type, start, fieldNo: 0, tagAt: 0 });
    this.walk(type, start, end, 0, 0);
  }

  walk(type: protobuf.Type, start: number, end: number, fieldNo: number, tagAt: number): void {
    if (this.stack.length >= MAX_DEPTH) this.fail(`messages nested deeper than ${MAX_DEPTH} levels`, start);
    this.stack.push({ type, start, fieldNo, tagAt });
    const layout = layoutOf(type);
    const buf = this.buf;
    let pos = start;
    while (pos < end) {
      const at = pos;
      let tag: number;
      // One-byte tags (fields 1 to 15) are nearly all of them: read those inline.
      if (buf[pos]! < 0x80) tag = buf[pos++]!;
      else { tag = this.tag(pos, end); pos = this.after; }
      const wire = tag % 8;
      const number = (tag - wire) / 8;
      if (number === 0) this.fail('field number 0', at);
      const field = layout[number];
      if (!field) {
        pos = this.skip(wire, pos, end); // unknown field: kept verbatim by the decoder
        continue;
      }
      if (field.child) {
        if (wire !== Wire.Bytes) this.fail(`field ${field.name} has wire type ${wire}, expected a message`, at);
        const bodyEnd = this.delimited(pos, end, field.name);
        if (!(number === 1 && this.skipMainGraphNodes && this.stack.length === 2 && type.name === 'GraphProto')) {
          this.walk(field.child, this.after, bodyEnd, number, at);
        }
        pos = bodyEnd;
        continue;
      }
      const expected = field.wire;
      if (wire === expected && wire === Wire.Bytes) {
        pos = this.delimited(pos, end, field.name);
      } else if (wire === expected) {
        pos = this.skip(wire, pos, end);
      } else if (wire === Wire.Bytes && field.repeated && expected !== Wire.Bytes) {
        const bodyEnd = this.delimited(pos, end, field.name);
        this.checkPacked(expected, this.after, bodyEnd, field.name);
        pos = bodyEnd;
      } else {
        this.fail(`field ${field.name} has wire type ${wire}, expected ${expected}`, at);
      }
    }
    this.stack.pop();
  }

  private checkPacked(wire: Wire, start: number, end: number, name: string): void {
    const width = wire === Wire.Fixed32 ? 4 : wire === Wire.Fixed64 ? 8 : 0;
    if (width) {
      if ((end - start) % width !== 0) this.fail(`packed field ${name} is not a whole number of ${width}-byte values`, start);
      return;
    }
    for (let pos = start; pos < end;) { this.varint(pos, end); pos = this.after; }
  }
}

/**
 * Throws OnnxDecodeError unless `bytes` is a structurally sound encoding of `type`. With
 * `skipMainGraphNodes` (a ModelProto), the node bodies of the main graph are left to the caller.
 */
export function checkWireStructure(bytes: Uint8Array, type: protobuf.Type, options: { skipMainGraphNodes?: boolean } = {}): void {
  const walker = new WireWalker(bytes);
  walker.skipMainGraphNodes = options.skipMainGraphNodes ?? false;
  walker.walk(type, 0, bytes.length, 0, 0);
}

/**
 * Whether bytes[start, end) is a sound encoding of `type` nested `depth` messages deep. No error
 * details: a caller that gets false checks the whole message again to report where it broke.
 */
export function isSoundMessage(bytes: Uint8Array, type: protobuf.Type, start: number, end: number, depth: number): boolean {
  const walker = new WireWalker(bytes);
  try {
    walker.walkAtDepth(type, start, end, depth);
    return true;
  } catch (error) {
    if (error instanceof OnnxDecodeError) return false;
    throw error;
  }
}
