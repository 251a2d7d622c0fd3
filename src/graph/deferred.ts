/**
 * Payloads that stay where they are. A lazily loaded model keeps each large raw_data field as a
 * 16-byte placeholder; the real bytes are described by a DeferredPayload, kept in the model's own
 * PayloadRegistry, and read only when asked for. encodeModelPieces() (codec.ts) turns a model into a list
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

/**
 * A placeholder is this program's secret (8 bytes: a model's bytes cannot contain it but by a
 * 2^-56 chance), the id of the registry that made it, and the payload's index there.
 */
const secret = new Uint8Array(8);
globalThis.crypto.getRandomValues(secret);
secret[0] = 0xfe; // findMarkers scans for this byte; never 0, the commonest byte in tensors
/** Registry id of payloads lent for one encode. */
const LENT_ID = 0;
let nextRegistryId = 1;

/** Registries by id, held weakly: bytes just encoded name their registry by id (see payloadAt). */
const live = new Map<number, WeakRef<PayloadRegistry>>();
const forget = new FinalizationRegistry<number>((id) => live.delete(id));
/** The registry whose placeholders a buffer holds (a lazily read model's compact bytes, a placeholder's own bytes). */
const ownerOf = new WeakMap<ArrayBufferLike, PayloadRegistry>();
const byPlaceholder = new WeakMap<Uint8Array, DeferredPayload>();

/**
 * The deferred payloads of one loaded model. The reader makes one per load and marks the model's
 * bytes as its own (owns()); the model's tensors reach it through those bytes, so it lives as long
 * as the model and is collected with it. Placeholders resolve only through their own registry.
 */
export class PayloadRegistry {
  readonly id = nextRegistryId++;
  /** @internal */
  private readonly payloads: DeferredPayload[] = [];

  constructor() {
    live.set(this.id, new WeakRef(this));
    forget.register(this, this.id);
  }

  get size(): number { return this.payloads.length; }

  /** A placeholder to store in raw_data for `payload`. */
  placeholderFor(payload: DeferredPayload): Uint8Array {
    const bytes = markerBytes(this.id, this.payloads.length);
    this.payloads.push(payload);
    byPlaceholder.set(bytes, payload);
    ownerOf.set(bytes.buffer, this);
    return bytes;
  }

  /** Marks `bytes` (and every view of its buffer) as holding this registry's placeholders. */
  owns(bytes: Uint8Array): void { ownerOf.set(bytes.buffer, this); }

  /** The payload of the placeholder at buf[at], if it is one of this registry's. */
  payloadAt(buf: Uint8Array, at: number): DeferredPayload | undefined {
    if (!isMarker(buf, at) || u32(buf, at + 8) !== this.id) return undefined;
    return this.payloads[u32(buf, at + 12)];
  }
}

/** A placeholder for `payload` in a registry of its own (for callers that defer payloads one at a time). */
export function placeholderFor(payload: DeferredPayload): Uint8Array {
  return new PayloadRegistry().placeholderFor(payload);
}

/** The registry whose placeholders `bytes` (a view of a loaded model's bytes) may hold. */
export function payloadRegistryOf(bytes: Uint8Array): PayloadRegistry | undefined {
  return ownerOf.get(bytes.buffer);
}

/** The payload a raw_data value stands for, if it is a placeholder (see payloadAt for which resolve where). */
export function deferredPayloadOf(bytes: Uint8Array | undefined): DeferredPayload | undefined {
  if (!bytes || bytes.length !== PLACEHOLDER_LENGTH) return undefined;
  const known = byPlaceholder.get(bytes);
  if (known) return known;
  const payload = payloadAt(bytes, 0, ownerOf.get(bytes.buffer), false) as DeferredPayload | undefined;
  if (payload) byPlaceholder.set(bytes, payload);
  return payload;
}

function markerBytes(id: number, index: number): Uint8Array {
  const bytes = new Uint8Array(PLACEHOLDER_LENGTH);
  bytes.set(secret);
  const view = new DataView(bytes.buffer);
  view.setUint32(8, id, true);
  view.setUint32(12, index, true);
  return bytes;
}

const u32 = (buf: Uint8Array, at: number) => (buf[at]! | (buf[at + 1]! << 8) | (buf[at + 2]! << 16) | (buf[at + 3]! << 24)) >>> 0;

function isMarker(buf: Uint8Array, at: number): boolean {
  if (at + PLACEHOLDER_LENGTH > buf.length) return false;
  for (let i = 0; i < secret.length; i++) if (buf[at + i] !== secret[i]) return false;
  return true;
}

/**
 * Payloads lent for one encode: large raw_data fields, and every placeholder, are swapped for
 * lent placeholders while protobufjs encodes the rest, so payload bytes are never copied into its
 * buffer; the pieces then hold views of them (or the deferred payloads), and joining copies each
 * payload exactly once. A placeholder that does not resolve (deferredPayloadOf) is lent as the
 * bytes it is, so the encoding agrees with what the tensor reads.
 */
let lent: EncodedPiece[] = [];
/** raw_data of at least this many bytes is lent (smaller ones cost less to copy than to splice). */
const LEND_FROM = 4096;

export function withLentPayloads<T>(tensors: Iterable<TensorProto>, encode: () => T): T {
  if (lent.length) return encode(); // already lending (a nested encode): its placeholders are spliced by the outer one
  const swapped: [TensorProto, Uint8Array][] = [];
  try {
    for (const t of tensors) {
      const raw = t.raw_data;
      if (!raw || !Object.hasOwn(t, 'raw_data')) continue;
      const marker = raw.length === PLACEHOLDER_LENGTH && isMarker(raw, 0);
      if (!marker && raw.length < LEND_FROM) continue;
      swapped.push([t, raw]);
      t.raw_data = markerBytes(LENT_ID, lent.length);
      lent.push((marker && deferredPayloadOf(raw)) || raw);
    }
    return encode();
  } finally {
    for (const [t, raw] of swapped) t.raw_data = raw;
    lent = [];
  }
}

/**
 * The piece a placeholder at buf[at] stands for. A buffer a registry owns (a loaded model's bytes)
 * resolves only that registry's placeholders: one model's bytes never reach another's payloads.
 * Bytes of no registry (just encoded, or a copy made by encoding a model, where a placeholder can
 * only have come from bytes the process made) resolve lent pieces when `encoded`, and otherwise
 * the registry named in the placeholder while it lives.
 */
function payloadAt(buf: Uint8Array, at: number, owner: PayloadRegistry | undefined, encoded: boolean): EncodedPiece | undefined {
  if (owner) return owner.payloadAt(buf, at);
  if (!isMarker(buf, at)) return undefined;
  const id = u32(buf, at + 8), index = u32(buf, at + 12);
  if (id === LENT_ID) return encoded ? lent[index] : undefined;
  return live.get(id)?.deref()?.payloadAt(buf, at);
}

const anyPlaceholders = () => live.size > 0 || lent.length > 0;

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
  const out = spliceMessage(compact, ModelProtoType, 0, compact.length, markers, (b, at) => payloadAt(b, at, undefined, true));
  return { pieces: coalesce(out.pieces), length: out.size };
}

/**
 * The fields in buf[start, end) of a `type` message as pieces, placeholders replaced by their
 * payloads (enclosing length prefixes recomputed). Placeholder positions are found once per buffer.
 * `encoded`: buf was just encoded, so it may hold lent placeholders (source bytes never do).
 */
export function fieldsAsPieces(buf: Uint8Array, type: protobuf.Type, start: number, end: number, encoded = false): { pieces: EncodedPiece[]; size: number } {
  const owner = encoded ? undefined : ownerOf.get(buf.buffer);
  if (owner ? !owner.size : !anyPlaceholders()) return { pieces: [buf.subarray(start, end)], size: end - start };
  let markers = markersByBuffer.get(buf);
  if (!markers) markersByBuffer.set(buf, markers = findMarkers(buf));
  return spliceMessage(buf, type, start, end, markers, (b, at) => payloadAt(b, at, owner, encoded));
}
const markersByBuffer = new WeakMap<Uint8Array, number[]>();

function findMarkers(buf: Uint8Array): number[] {
  const found: number[] = [];
  const first = secret[0]!;
  for (let i = buf.indexOf(first); i >= 0 && i + PLACEHOLDER_LENGTH <= buf.length; i = buf.indexOf(first, i + 1)) {
    if (isMarker(buf, i)) found.push(i);
  }
  return found;
}

const hasMarker = (markers: number[], start: number, end: number) => {
  let lo = 0, hi = markers.length;
  while (lo < hi) { const mid = (lo + hi) >> 1; if (markers[mid]! < start) lo = mid + 1; else hi = mid; }
  return lo < markers.length && markers[lo]! < end;
};

type Resolve = (buf: Uint8Array, at: number) => EncodedPiece | undefined;

function spliceMessage(buf: Uint8Array, type: protobuf.Type, start: number, end: number, markers: number[], resolve: Resolve): { pieces: EncodedPiece[]; size: number } {
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
    const payload = len === PLACEHOLDER_LENGTH && field?.type === 'bytes' ? resolve(buf, body) : undefined;
    if (payload) {
      const prefix = encodeVarint(payload.length);
      pieces.push(tagBytes, prefix, payload);
      size += tagBytes.length + prefix.length + payload.length;
    } else if (resolved && 'fieldsById' in resolved) {
      const child = spliceMessage(buf, resolved as protobuf.Type, body, bodyEnd, markers, resolve);
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
