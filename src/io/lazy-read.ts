/**
 * Reads a model file without reading its large payloads. The file's wire structure is walked with
 * positioned reads; messages smaller than the threshold are copied as they are, and every bytes
 * field at least `threshold` long (tensor raw_data) is replaced by a placeholder that remembers the
 * file offset. The compact copy decodes like the file would, in a fraction of the memory.
 */
import { closeSync, fstatSync, openSync, readSync } from 'node:fs';
import type protobuf from 'protobufjs/light.js';
import { OnnxDecodeError } from '../graph/errors.js';
import { ModelProtoType } from '../graph/proto.js';
import { PLACEHOLDER_LENGTH, placeholderFor, type DeferredPayload } from '../graph/deferred.js';
import { encodeVarint } from '../graph/varint.js';
import { FileAccessError } from './errors.js';

export interface CompactFile { bytes: Uint8Array; size: number; deferred: number; deferredBytes: number }

/** Default: payloads of 1 MiB and more stay on disk. */
export const DEFAULT_DEFER_THRESHOLD = 1 << 20;

export function readCompact(path: string, threshold = DEFAULT_DEFER_THRESHOLD): CompactFile {
  let fd: number;
  try { fd = openSync(path, 'r'); } catch (error) {
    throw new FileAccessError(`Cannot read ${path}: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}`, { cause: error });
  }
  try {
    const size = fstatSync(fd).size;
    const walker = new SparseWalker(fd, path, size, threshold);
    const out = new Output(Math.min(size, 1 << 20) || 16);
    walker.walk(ModelProtoType, 0, size, out);
    return { bytes: out.bytes(), size, deferred: walker.deferred, deferredBytes: walker.deferredBytes };
  } finally {
    closeSync(fd);
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
  private readonly window = new Uint8Array(WINDOW);
  private windowStart = 0;
  private windowEnd = 0;

  constructor(private readonly fd: number, private readonly path: string, private readonly size: number, private readonly threshold: number) {}

  private fail(reason: string, offset: number, type: protobuf.Type): never {
    throw new OnnxDecodeError(reason, type.name, offset);
  }

  private byteAt(pos: number): number {
    if (pos < this.windowStart || pos >= this.windowEnd) {
      this.windowStart = pos;
      this.windowEnd = pos + readSync(this.fd, this.window, 0, Math.min(WINDOW, this.size - pos), pos);
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
    let done = 0;
    while (done < target.length) {
      const n = readSync(this.fd, target, done, target.length - done, start + done);
      if (n === 0) throw new FileAccessError(`${this.path} changed while it was being read`);
      done += n;
    }
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
      if (wire !== 2) {
        pos = wire === 0 ? this.varint(afterTag, end, type)[1] : wire === 1 ? afterTag + 8 : wire === 5 ? afterTag + 4 : this.fail(`invalid wire type ${wire}`, fieldStart, type);
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
        out.push(placeholderFor(this.payload(body, len)));
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

  private payload(offset: number, length: number): DeferredPayload {
    return new FilePayload(this.path, offset, length);
  }
}

/** Bytes at `source.offset` of `source.path`, read on demand. */
class FilePayload implements DeferredPayload {
  source: { path: string; offset: number };
  constructor(path: string, offset: number, readonly length: number) {
    this.source = { path, offset };
  }

  read(): Uint8Array {
    const { path, offset } = this.source;
    const fd = openSync(path, 'r');
    try {
      const bytes = new Uint8Array(this.length);
      for (let done = 0; done < this.length;) {
        const n = readSync(fd, bytes, done, this.length - done, offset + done);
        if (n === 0) throw new FileAccessError(`${path} is shorter than when it was loaded`);
        done += n;
      }
      return bytes;
    } finally { closeSync(fd); }
  }
}
