/**
 * Payloads that stay where they are. A lazily loaded model keeps each large raw_data field as a
 * 16-byte placeholder (a per-process marker plus an index); the real bytes are described by a
 * DeferredPayload and read only when asked for. encodeModelPieces() (codec.ts) turns a model into a list
 * of byte pieces and payload references, with every length prefix recomputed, so a writer can
 * stream payloads from their source without ever holding them.
 */
import type protobuf from 'protobufjs/light.js';
import { ModelProtoType, type ModelProto, type TensorProto } from './proto.js';
import { encodeVarint, skipValue, varintAt } from './varint.js';

export interface DeferredPayload {
  readonly length: number;
  /** Reads the whole payload (for code that needs the values; writers stream instead). */
  read(): Uint8Array;
  /**
   * Where the bytes are, for writers that copy them piece by piece. A writer that replaces the
   * source file (an in-place save) points this at the payload's place in the new file.
   */
  source: { path: string; offset: number };
  /** The payload in pieces, each a fresh buffer (for streaming writers); read() in one piece when absent. */
  chunks?(): Iterable<Uint8Array>;
}

export const PLACEHOLDER_LENGTH = 16;
const nonce = new Uint8Array(12);
// Random enough to never collide with real tensor bytes; one marker per running program.
for (let i = 0; i < nonce.length; i++) nonce[i] = Math.floor(Math.random() * 256);
nonce[0] = 0xfe; nonce[1] = 0x4e; // never a valid small float pattern by accident of zeros

const payloads: DeferredPayload[] = [];
const byPlaceholder = new WeakMap<Uint8Array, DeferredPayload>();

/** A placeholder to store in raw_data for `payload`. */
export function placeholderFor(payload: DeferredPayload): Uint8Array {
  const bytes = new Uint8Array(PLACEHOLDER_LENGTH);
  bytes.set(nonce);
  new DataView(bytes.buffer).setUint32(12, payloads.length, true);
  payloads.push(payload);
  byPlaceholder.set(bytes, payload);
  return bytes;
}

/** The payload a raw_data value stands for, if it is a placeholder. */
export function deferredPayloadOf(bytes: Uint8Array | undefined): DeferredPayload | undefined {
  if (!bytes || bytes.length !== PLACEHOLDER_LENGTH) return undefined;
  const known = byPlaceholder.get(bytes);
  if (known) return known;
  const index = placeholderIndex(bytes, 0);
  if (index === undefined) return undefined;
  const payload = payloads[index];
  if (payload) byPlaceholder.set(bytes, payload);
  return payload;
}

/**
 * Payloads lent for one encode: large raw_data fields are swapped for placeholders (index with the
 * top bit set) while protobufjs encodes the rest, so their bytes are never copied into its buffer;
 * the pieces then hold views of them, and joining copies each payload exactly once.
 */
const LENT = 0x80000000;
let lent: Uint8Array[] = [];
/** raw_data of at least this many bytes is lent (smaller ones cost less to copy than to splice). */
const LEND_FROM = 4096;

export function withLentPayloads<T>(tensors: Iterable<TensorProto>, encode: () => T): T {
  if (lent.length) return encode(); // already lending (a nested encode): its placeholders are spliced by the outer one
  const swapped: [TensorProto, Uint8Array][] = [];
  try {
    for (const t of tensors) {
      const raw = t.raw_data;
      if (!raw || raw.length < LEND_FROM || !Object.hasOwn(t, 'raw_data')) continue;
      const bytes = new Uint8Array(PLACEHOLDER_LENGTH);
      bytes.set(nonce);
      new DataView(bytes.buffer).setUint32(12, LENT + lent.length, true);
      lent.push(raw);
      swapped.push([t, raw]);
      t.raw_data = bytes;
    }
    return encode();
  } finally {
    for (const [t, raw] of swapped) t.raw_data = raw;
    lent = [];
  }
}

/** The piece a placeholder at buf[at] stands for: a lent payload's bytes, or a deferred payload. */
function payloadAt(buf: Uint8Array, at: number): EncodedPiece | undefined {
  const index = placeholderIndex(buf, at);
  if (index === undefined) return undefined;
  return index >= LENT ? lent[index - LENT] : payloads[index];
}

const anyPlaceholders = () => payloads.length > 0 || lent.length > 0;

function placeholderIndex(buf: Uint8Array, at: number): number | undefined {
  for (let i = 0; i < nonce.length; i++) if (buf[at + i] !== nonce[i]) return undefined;
  return (buf[at + 12]! | (buf[at + 13]! << 8) | (buf[at + 14]! << 16) | (buf[at + 15]! << 24)) >>> 0;
}

export type EncodedPiece = Uint8Array | DeferredPayload;

/**
 * Encodes a ModelProto whose raw_data fields may hold placeholders into pieces: byte ranges and
 * payload references in file order, with all enclosing length prefixes computed for the real
 * payload sizes. Concatenating the pieces (payloads read) gives exactly encodeModelProto's bytes
 * for the same model with its payloads in place.
 */
export function encodeProtoPieces(proto: ModelProto): { pieces: EncodedPiece[]; length: number } {
  const compact = ModelProtoType.encode(proto as unknown as protobuf.Message).finish();
  const markers = anyPlaceholders() ? findMarkers(compact) : [];
  if (!markers.length) return { pieces: [compact], length: compact.length };
  const out = spliceMessage(compact, ModelProtoType, 0, compact.length, markers);
  return { pieces: coalesce(out.pieces), length: out.size };
}

/**
 * The fields in buf[start, end) of a `type` message as pieces, placeholders replaced by their
 * payloads (enclosing length prefixes recomputed). Placeholder positions are found once per buffer.
 * `encoded`: buf was just encoded, so it may hold lent placeholders (source bytes never do).
 */
export function fieldsAsPieces(buf: Uint8Array, type: protobuf.Type, start: number, end: number, encoded = false): { pieces: EncodedPiece[]; size: number } {
  if (!payloads.length && !(encoded && lent.length)) return { pieces: [buf.subarray(start, end)], size: end - start };
  let markers = markersByBuffer.get(buf);
  if (!markers) markersByBuffer.set(buf, markers = findMarkers(buf));
  return spliceMessage(buf, type, start, end, markers);
}
const markersByBuffer = new WeakMap<Uint8Array, number[]>();

function findMarkers(buf: Uint8Array): number[] {
  const found: number[] = [];
  const first = nonce[0]!;
  for (let i = buf.indexOf(first); i >= 0 && i + PLACEHOLDER_LENGTH <= buf.length; i = buf.indexOf(first, i + 1)) {
    if (placeholderIndex(buf, i) !== undefined) found.push(i);
  }
  return found;
}

const hasMarker = (markers: number[], start: number, end: number) => {
  let lo = 0, hi = markers.length;
  while (lo < hi) { const mid = (lo + hi) >> 1; if (markers[mid]! < start) lo = mid + 1; else hi = mid; }
  return lo < markers.length && markers[lo]! < end;
};

function spliceMessage(buf: Uint8Array, type: protobuf.Type, start: number, end: number, markers: number[]): { pieces: EncodedPiece[]; size: number } {
  if (!hasMarker(markers, start, end)) return { pieces: [buf.subarray(start, end)], size: end - start };
  const pieces: EncodedPiece[] = [];
  let size = 0;
  let pos = start;
  while (pos < end) {
    const fieldStart = pos;
    const [tag, afterTag] = varintAt(buf, pos);
    const wire = tag % 8;
    if (wire !== 2) {
      pos = skipValue(buf, wire, afterTag);
      pieces.push(buf.subarray(fieldStart, pos));
      size += pos - fieldStart;
      continue;
    }
    const [len, body] = varintAt(buf, afterTag);
    const bodyEnd = body + len;
    pos = bodyEnd;
    if (!hasMarker(markers, body, bodyEnd)) {
      pieces.push(buf.subarray(fieldStart, bodyEnd));
      size += bodyEnd - fieldStart;
      continue;
    }
    const field = type.fieldsById[(tag - wire) / 8];
    const resolved = field?.resolve().resolvedType;
    const tagBytes = buf.subarray(fieldStart, afterTag);
    const payload = len === PLACEHOLDER_LENGTH && field?.type === 'bytes' ? payloadAt(buf, body) : undefined;
    if (payload) {
      const prefix = encodeVarint(payload.length);
      pieces.push(tagBytes, prefix, payload);
      size += tagBytes.length + prefix.length + payload.length;
    } else if (resolved && 'fieldsById' in resolved) {
      const child = spliceMessage(buf, resolved as protobuf.Type, body, bodyEnd, markers);
      const prefix = encodeVarint(child.size);
      pieces.push(tagBytes, prefix);
      for (const p of child.pieces) pieces.push(p);
      size += tagBytes.length + prefix.length + child.size;
    } else {
      pieces.push(buf.subarray(fieldStart, bodyEnd));
      size += bodyEnd - fieldStart;
    }
  }
  return { pieces, size };
}

/** Merges neighbouring byte ranges of the same buffer, so writers issue fewer, larger writes. */
export function coalesce(pieces: EncodedPiece[]): EncodedPiece[] {
  const out: EncodedPiece[] = [];
  for (const p of pieces) {
    const last = out[out.length - 1];
    if (p instanceof Uint8Array && last instanceof Uint8Array && last.buffer === p.buffer && last.byteOffset + last.length === p.byteOffset) {
      out[out.length - 1] = new Uint8Array(p.buffer, last.byteOffset, last.length + p.length);
    } else {
      out.push(p);
    }
  }
  return out;
}

/** Concatenates pieces, reading deferred payloads (the in-memory path): each payload is copied once. */
export function joinPieces(pieces: EncodedPiece[], length: number): Uint8Array {
  if (pieces.length === 1 && pieces[0] instanceof Uint8Array) return pieces[0];
  const out = new Uint8Array(length);
  let at = 0;
  for (const p of pieces) {
    const bytes = p instanceof Uint8Array ? p : p.read();
    out.set(bytes, at);
    at += bytes.length;
  }
  return out;
}
