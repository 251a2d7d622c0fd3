/**
 * Reads a model file without reading its large payloads. The file's wire structure is walked with
 * positioned reads; messages smaller than the threshold are copied as they are, and every bytes
 * field at least `threshold` long (tensor raw_data) is replaced by a placeholder that remembers the
 * file offset. The compact copy decodes like the file would, in a fraction of the memory.
 * Payloads are read later through the descriptor the walk used (ModelSource), never by path.
 */
import type protobuf from 'protobufjs/light.js';
import { OnnxDecodeError } from '../graph/errors.js';
import { ModelProtoType } from '../graph/proto.js';
import { PLACEHOLDER_LENGTH, PayloadRegistry, type DeferredPayload } from '../graph/deferred.js';
import { encodeVarint } from '../graph/varint.js';
import { FileAccessError } from './errors.js';
import { ModelSource } from './model-source.js';

export interface CompactFile {
  bytes: Uint8Array;
  size: number;
  deferred: number;
  deferredBytes: number;
  /** The deferred payloads, owned by `bytes`: the model decoded from them keeps them, and drops them with itself. */
  payloads: PayloadRegistry;
  /** The open file the deferred payloads read from (undefined when nothing was deferred); close it when done. */
  source: ModelSource | undefined;
}

/** Default: payloads of 1 MiB and more stay on disk. */
export const DEFAULT_DEFER_THRESHOLD = 1 << 20;

/**
 * Walks `file` (a path, opened here, or an open ModelSource the caller owns). A path's descriptor
 * is kept open only while payloads were deferred: it is returned as `source`.
 */
export function readCompact(file: string | ModelSource, threshold = DEFAULT_DEFER_THRESHOLD): CompactFile {
  const source = typeof file === 'string' ? ModelSource.openModel(file) : file;
  const owned = typeof file === 'string';
  try {
    const size = source.size;
    const walker = new SparseWalker(source, size, threshold);
    const out = new Output(Math.min(size, 1 << 20) || 16);
    walker.walk(ModelProtoType, 0, size, out);
    if (owned && !walker.deferred) source.close();
    const bytes = out.bytes();
    walker.payloads.owns(bytes);
    return { bytes, size, deferred: walker.deferred, deferredBytes: walker.deferredBytes, payloads: walker.payloads, source: walker.deferred ? source : undefined };
  } catch (error) {
    if (owned) source.close();
    throw error;
  }
}

class Output {
  private buf: Uint8Array;
  length = 0;
  constructor(capacity: number) { this.buf = new Uint8Array(capacity); }
  reserve(n: number): void {
    if (this.length + n <= this.buf.length) return;
    let cap = this.buf.length * 2;
    while (cap < this.length + n) cap *= 2;
    const next = new Uint8Array(cap);
    next.set(this.buf.subarray(0, this.length));
    this.buf = next;
  }
  push(bytes: Uint8Array): void { this.reserve(bytes.length); this.buf.set(bytes, this.length); this.length += bytes.length; }
  /** Space for `n` bytes to be filled directly (e.g. by a file read). */
  slot(n: number): Uint8Array { this.reserve(n); const s = this.buf.subarray(this.length, this.length + n); this.length += n; return s; }
  bytes(): Uint8Array { return this.buf.subarray(0, this.length); }
}

const WINDOW = 1 << 16;

class SparseWalker {
  deferred = 0;
  deferredBytes = 0;
  readonly payloads = new PayloadRegistry();
  private readonly window = new Uint8Array(WINDOW);
  private windowStart = 0;
  private windowEnd = 0;

  constructor(private readonly source: ModelSource, private readonly size: number, private readonly threshold: number) {}

  private fail(reason: string, offset: number, type: protobuf.Type): never {
    throw new OnnxDecodeError(reason, type.name, offset);
  }

  private byteAt(pos: number): number {
    if (pos < this.windowStart || pos >= this.windowEnd) {
      const n = this.source.readSome(this.window, 0, Math.min(WINDOW, this.size - pos), pos);
      if (n === 0) {
        this.source.checkUnchanged();
        throw new FileAccessError(`${this.source.path} ends at byte ${pos}, before the ${this.size} bytes it had when opened.`);
      }
      this.windowStart = pos;
      this.windowEnd = pos + n;
    }
    return this.window[pos - this.windowStart]!;
  }

  private varint(pos: number, end: number, type: protobuf.Type): [number, number] {
    let result = 0, scale = 1;
    for (let i = 0; i < 10; i++) {
      if (pos >= end) this.fail('a varint runs past the end of its field', pos, type);
      const b = this.byteAt(pos++);
      result += (b & 0x7f) * scale;
      if (b < 0x80) return [result, pos];
      scale *= 128;
    }
    return this.fail('a varint is longer than 10 bytes', pos, type);
  }

  private copy(out: Output, start: number, end: number): void {
    const target = out.slot(end - start);
    this.source.readInto(target, 0, target.length, start);
  }

  walk(type: protobuf.Type, start: number, end: number, out: Output, depth = 0): void {
    if (depth > 100) this.fail('messages nested deeper than 100 levels', start, type);
    // Fields kept as they are accumulate into one pending range, copied with a single read.
    let pending = start;
    const flush = (upTo: number) => { if (upTo > pending) this.copy(out, pending, upTo); pending = upTo; };
    let pos = start;
    while (pos < end) {
      const fieldStart = pos;
      const [tag, afterTag] = this.varint(pos, end, type);
      const wire = tag % 8;
      this.checkTag(tag, fieldStart, type);
      if (wire !== 2) {
        pos = wire === 0 ? this.varint(afterTag, end, type)[1] : wire === 1 ? afterTag + 8 : afterTag + 4;
        if (pos > end) this.fail('a field runs past the end of its message', fieldStart, type);
        continue;
      }
      const [len, body] = this.varint(afterTag, end, type);
      const bodyEnd = body + len;
      if (bodyEnd > end) this.fail(`a field claims ${len} bytes but only ${end - body} remain`, body, type);
      pos = bodyEnd;
      const field = len >= this.threshold ? type.fieldsById[(tag - wire) / 8] : undefined;
      const resolved = field?.resolve().resolvedType;
      if (field && field.type === 'bytes') {
        flush(afterTag);
        out.push(encodeVarint(PLACEHOLDER_LENGTH));
        out.push(this.payloads.placeholderFor(this.payload(body, len)));
        pending = bodyEnd;
        this.deferred++;
        this.deferredBytes += len;
      } else if (resolved && 'fieldsById' in resolved) {
        flush(afterTag);
        const child = new Output(1 << 12);
        this.walk(resolved as protobuf.Type, body, bodyEnd, child, depth + 1);
        out.push(encodeVarint(child.length));
        out.push(child.bytes());
        pending = bodyEnd;
      }
    }
    flush(end);
  }

  /**
   * Stops at the first field no protobuf encoder writes (a file of zeros is field 0 over and over):
   * field number 0 or past 2^29 - 1, groups (wire types 3 and 4, not used by ONNX), wire types 6 and 7.
   */
  private checkTag(tag: number, offset: number, type: protobuf.Type): void {
    const wire = tag % 8, field = (tag - wire) / 8;
    if (field === 0) this.fail('field number 0 (no protobuf message has one)', offset, type);
    if (field > MAX_FIELD_NUMBER) this.fail(`field number ${field} is beyond protobuf's limit of ${MAX_FIELD_NUMBER}`, offset, type);
    if (wire === 3 || wire === 4) this.fail(`field ${field} is a group (wire type ${wire}), which ONNX does not use`, offset, type);
    if (wire > 5) this.fail(`field ${field} has invalid wire type ${wire}`, offset, type);
  }

  private payload(offset: number, length: number): DeferredPayload {
    return new FilePayload(this.source, offset, length);
  }
}

const MAX_FIELD_NUMBER = 2 ** 29 - 1;

/** `length` bytes at `offset` of an open model file, read on demand. */
export class FilePayload implements DeferredPayload {
  constructor(public file: ModelSource, public offset: number, readonly length: number) {}

  get source(): { path: string; offset: number } {
    return { path: this.file.path, offset: this.offset };
  }

  read(): Uint8Array {
    this.file.checkUnchanged();
    const bytes = new Uint8Array(this.length);
    this.file.readInto(bytes, 0, this.length, this.offset);
    this.file.checkUnchanged();
    return bytes;
  }

  /** The payload in fresh 4 MiB buffers (a consumer may keep them), the file checked before and after. */
  *chunks(): Iterable<Uint8Array> {
    this.file.checkUnchanged();
    for (let done = 0; done < this.length;) {
      const bytes = new Uint8Array(Math.min(CHUNK, this.length - done));
      this.file.readInto(bytes, 0, bytes.length, this.offset + done);
      done += bytes.length;
      if (done === this.length) this.file.checkUnchanged();
      yield bytes;
    }
  }
}

const CHUNK = 4 << 20;
