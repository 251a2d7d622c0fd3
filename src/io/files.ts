/**
 * Model files on disk (Node only): read with the external-data checks, write atomically, and
 * carry external data along when the output goes to another folder.
 */
import { closeSync, constants, copyFileSync, existsSync, mkdirSync, openSync, readFileSync, readSync, realpathSync, renameSync, statSync, unlinkSync } from 'node:fs';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { open, type FileHandle } from 'node:fs/promises';
import { decodeModel, encodeModelPieces } from '../graph/codec.js';
import { deferredPayloadOf, joinPieces, type EncodedPiece } from '../graph/deferred.js';
import { DEFAULT_DEFER_THRESHOLD, readCompact } from './lazy-read.js';
import { externalizeInitializers } from '../graph/external.js';
import type { Model } from '../graph/ir.js';
import { OnnxNeftuneError } from '../graph/errors.js';
import { checkExternalData, type ExternalDataFile } from './external-data.js';
import { FileAccessError, ModelTooLargeError, RefusedError } from './errors.js';

/** protobuf's hard limit for one message. */
export const MAX_PROTOBUF_BYTES = 2 ** 31 - 1;

export interface LoadedModel {
  model: Model;
  /** Absolute path, or undefined when read from memory / stdin. */
  path: string | undefined;
  /** Folder external data is resolved against. */
  dir: string;
  size: number;
  externalData: ExternalDataFile[];
}

export interface ReadOptions {
  /** Tensor payloads at least this large stay on disk until needed (default 1 MiB; Infinity reads everything). */
  deferThreshold?: number;
}

/**
 * Reads and decodes a model file; every external-data reference is checked before any data file is
 * opened. Large payloads are not read: they stay in the file and are streamed when the model is saved.
 */
export function readModelFile(file: string, options: ReadOptions = {}): LoadedModel {
  const full = path.resolve(file);
  const threshold = options.deferThreshold ?? DEFAULT_DEFER_THRESHOLD;
  if (!Number.isFinite(threshold)) {
    let bytes: Uint8Array;
    try {
      bytes = new Uint8Array(readFileSync(full));
    } catch (error) {
      throw new FileAccessError(`Cannot read ${file}: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}`, { cause: error });
    }
    return loadModelBytes(bytes, full);
  }
  const compact = readCompact(full, threshold);
  return { ...loadModelBytes(compact.bytes, full), size: compact.size };
}

/** Decodes model bytes that came from `file` (or from stdin when `file` is undefined). */
export function loadModelBytes(bytes: Uint8Array, file: string | undefined): LoadedModel {
  const model = decodeModel(bytes);
  const dir = file ? path.dirname(file) : process.cwd();
  const externalData = checkExternalData(model, dir);
  if (!file && externalData.length) {
    throw new RefusedError(`A model read from stdin cannot use external data (it references ${externalData.map((f) => f.location).join(', ')}); pass the model's file path instead.`);
  }
  return { model, path: file, dir, size: bytes.length, externalData };
}

/** A hidden temp file name in `dest`'s folder (the rename into place then stays on one file system). */
function tempPathBeside(dest: string): string {
  const full = path.resolve(dest);
  return path.join(path.dirname(full), `.${path.basename(full)}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`);
}

const liveTempFiles = new Set<string>();
let signalsHooked = false;
function hookSignals(): void {
  if (signalsHooked) return;
  signalsHooked = true;
  for (const [signal, code] of [['SIGINT', 130], ['SIGTERM', 143]] as const) {
    process.once(signal, () => {
      for (const f of liveTempFiles) { try { unlinkSync(f); } catch { /* already gone */ } }
      process.exit(code);
    });
  }
}

/**
 * Writes `chunks` to `dest` atomically: a temp file in the destination folder, then renamed over
 * `dest`. On failure, SIGINT or SIGTERM the temp file is removed and `dest` is as it was. (SIGKILL
 * cannot be caught: `dest` is still intact, but a stray temp file may remain.)
 * When the rename replaces an existing file, the temp file is flushed to disk first, so a power
 * loss cannot cost the old content; a new file is not flushed (as with `cp`): the input is intact.
 * One write is in flight while the next chunk is produced; chunks go out in slices with the event
 * loop free in between, so signals are handled mid-write. A chunk must stay unchanged until the
 * iterator has been resumed twice after yielding it (`streamPieces` double-buffers).
 */
export async function writeFileAtomic(dest: string, chunks: Iterable<Uint8Array>, onProgress?: (written: number) => void): Promise<number> {
  const dir = path.dirname(path.resolve(dest));
  mkdirSync(dir, { recursive: true });
  const temp = tempPathBeside(dest);
  const replacing = existsSync(dest);
  hookSignals();
  liveTempFiles.add(temp);
  let handle: FileHandle | undefined;
  let inFlight: Promise<void> | undefined;
  let written = 0;
  try {
    const file = handle = await open(temp, 'wx', 0o644);
    const writeAll = async (slice: Uint8Array, position: number) => {
      for (let off = 0; off < slice.length;) off += (await file.write(slice, off, slice.length - off, position + off)).bytesWritten;
      written += slice.length;
      onProgress?.(written);
    };
    let position = 0;
    for (const slice of slices(chunks)) {
      const next = writeAll(slice, position);
      position += slice.length;
      next.catch(() => { /* awaited below */ });
      if (inFlight) await inFlight;
      inFlight = next;
    }
    if (inFlight) await inFlight;
    inFlight = undefined;
    if (replacing) await handle.sync();
    await handle.close();
    handle = undefined;
    renameSync(temp, dest);
    liveTempFiles.delete(temp);
    return written;
  } catch (error) {
    if (inFlight) { try { await inFlight; } catch { /* reported below */ } }
    if (handle) { try { await handle.close(); } catch { /* ignore */ } }
    try { unlinkSync(temp); } catch { /* ignore */ }
    liveTempFiles.delete(temp);
    if (error instanceof OnnxNeftuneError) throw error;
    throw new FileAccessError(`Cannot write ${dest}: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}`, { cause: error });
  }
}

function* slices(chunks: Iterable<Uint8Array>): Iterable<Uint8Array> {
  for (const chunk of chunks) {
    for (let off = 0; off < chunk.length; off += WRITE_SLICE) yield chunk.subarray(off, Math.min(chunk.length, off + WRITE_SLICE));
  }
}

const WRITE_SLICE = 8 << 20;

export interface SaveOptions {
  /** Allow writing over the file the model was read from. */
  inPlace?: boolean;
  onProgress?: (written: number, total: number) => void;
}

export interface SaveResult {
  path: string;
  bytes: number;
  /** External data files copied beside the output (empty when the output shares the input's folder). */
  copiedData: string[];
  /** External data files already present at the destination with identical content. */
  reusedData: string[];
}

/** Same file on disk (after resolving links), or undefined if `b` does not exist. */
export function sameFile(a: string, b: string): boolean {
  if (!existsSync(b) || !existsSync(a)) return false;
  return realpathSync(a) === realpathSync(b);
}

/** Encodes and writes `loaded.model` to `dest`, keeping its external data reachable. */
export async function saveModelFile(loaded: LoadedModel, dest: string, options: SaveOptions = {}): Promise<SaveResult> {
  const target = path.resolve(dest);
  if (loaded.path && sameFile(loaded.path, target) && !options.inPlace) {
    throw new RefusedError(`Refusing to overwrite the input ${loaded.path}; pass --in-place to modify it, or choose another output.`);
  }
  const { pieces, length } = encodeChecked(loaded.model);
  const { copiedData, reusedData } = carryExternalData(loaded, path.dirname(target));
  await writeFileAtomic(target, streamPieces(pieces), options.onProgress ? (w) => options.onProgress!(w, length) : undefined);
  retargetReplacedPayloads(pieces, target);
  return { path: target, bytes: length, copiedData, reusedData };
}

/**
 * After writing over the file deferred payloads were read from (an in-place save), points them at
 * their places in the new file, so the model in memory stays readable.
 */
function retargetReplacedPayloads(pieces: EncodedPiece[], target: string): void {
  let offset = 0;
  for (const piece of pieces) {
    if (!(piece instanceof Uint8Array) && path.resolve(piece.source.path) === target) piece.source = { path: target, offset };
    offset += piece.length;
  }
}

const COPY_BUFFER = 4 << 20;

/**
 * Byte pieces as they are; deferred payloads read from their file through two reused buffers in
 * turn (a yielded buffer is refilled only after the iterator resumes twice, see writeFileAtomic).
 */
export function* streamPieces(pieces: Iterable<EncodedPiece>): Iterable<Uint8Array> {
  let buffers: [Uint8Array, Uint8Array] | undefined;
  let turn = 0;
  for (const piece of pieces) {
    if (piece instanceof Uint8Array) { yield piece; continue; }
    buffers ??= [new Uint8Array(COPY_BUFFER), new Uint8Array(COPY_BUFFER)];
    const fd = openSync(piece.source.path, 'r');
    try {
      for (let done = 0; done < piece.length;) {
        const buffer = buffers[turn ^= 1]!;
        const n = readSync(fd, buffer, 0, Math.min(buffer.length, piece.length - done), piece.source.offset + done);
        if (n === 0) throw new FileAccessError(`${piece.source.path} is shorter than when it was loaded`);
        done += n;
        yield buffer.subarray(0, n);
      }
    } finally {
      closeSync(fd);
    }
  }
}

/**
 * Writes `model` to `dest` with its large initializers in one external data file beside it
 * (`location`, default `<name>.data`). Both files are written atomically.
 */
export async function saveWithExternalData(model: Model, dest: string, options: { location?: string; threshold?: number } = {}): Promise<SaveResult> {
  const target = path.resolve(dest);
  const location = options.location ?? `${path.basename(target)}.data`;
  const data = externalizeInitializers(model, { location, ...(options.threshold !== undefined ? { threshold: options.threshold } : {}) });
  await writeFileAtomic(path.join(path.dirname(target), location), data.chunks);
  const { pieces, length } = encodeChecked(model);
  await writeFileAtomic(target, streamPieces(pieces));
  return { path: target, bytes: length, copiedData: [], reusedData: [] };
}

/** Encodes as pieces (payloads stay deferred), refusing models over protobuf's 2 GiB limit first. */
export function encodeChecked(model: Model): { pieces: EncodedPiece[]; length: number } {
  let inline = 0;
  for (const g of model.allGraphs()) {
    for (const v of g.initializers) {
      const raw = v.initializer!.proto.raw_data;
      inline += deferredPayloadOf(raw)?.length ?? raw?.length ?? 0;
    }
  }
  const tooLarge = (bytes: number) => new ModelTooLargeError(`The model would be ${(bytes / 2 ** 30).toFixed(2)} GiB as one file; protobuf limits a model file to 2 GiB. Keep its weights in external data (onnx.save_model(..., save_as_external_data=True)).`);
  if (inline > MAX_PROTOBUF_BYTES) throw tooLarge(inline);
  const encoded = encodeModelPieces(model);
  if (encoded.length > MAX_PROTOBUF_BYTES) throw tooLarge(encoded.length);
  return encoded;
}

/** The whole encoding in memory (for stdout and small outputs). */
export function encodeCheckedBytes(model: Model): Uint8Array {
  const { pieces, length } = encodeChecked(model);
  return joinPieces(pieces, length);
}

/**
 * Makes the external data reachable from `destDir`: nothing to do in the same folder; otherwise
 * each data file is copied under the same relative name (a copy-on-write clone where the file
 * system offers one), never over a different file. Missing data files are skipped (reported by inspect).
 */
export function carryExternalData(loaded: LoadedModel, destDir: string): { copiedData: string[]; reusedData: string[] } {
  const copiedData: string[] = [];
  const reusedData: string[] = [];
  if (!loaded.externalData.length || sameFile(loaded.dir, destDir)) return { copiedData, reusedData };
  for (const file of loaded.externalData) {
    if (!file.present) continue;
    const target = path.join(destDir, file.location);
    if (existsSync(target)) {
      if (sameContent(file.path, target)) { reusedData.push(target); continue; }
      throw new RefusedError(`Refusing to overwrite ${target}: a different file of that name is already there. Write the model to another folder, or next to its data.`);
    }
    mkdirSync(path.dirname(target), { recursive: true });
    const temp = tempPathBeside(target);
    try {
      copyFileSync(file.path, temp, constants.COPYFILE_FICLONE);
      renameSync(temp, target);
    } catch (error) {
      try { unlinkSync(temp); } catch { /* ignore */ }
      throw new FileAccessError(`Cannot copy external data ${file.path} to ${target}: ${(error as Error).message}`, { cause: error });
    }
    copiedData.push(target);
  }
  return { copiedData, reusedData };
}

function sameContent(a: string, b: string): boolean {
  const [sa, sb] = [statSync(a), statSync(b)];
  if (sa.size !== sb.size) return false;
  const chunk = 1 << 20;
  const [fa, fb] = [openSync(a, 'r'), openSync(b, 'r')];
  try {
    const [ba, bb] = [Buffer.alloc(chunk), Buffer.alloc(chunk)];
    for (let pos = 0; pos < sa.size; pos += chunk) {
      const n = readSyncFull(fa, ba, pos), m = readSyncFull(fb, bb, pos);
      if (n !== m || ba.compare(bb, 0, m, 0, n) !== 0) return false;
    }
    return true;
  } finally { closeSync(fa); closeSync(fb); }
}

function readSyncFull(fd: number, buf: Buffer, pos: number): number {
  let total = 0;
  for (;;) {
    const n = readSyncAt(fd, buf, total, pos + total);
    if (n === 0) return total;
    total += n;
    if (total === buf.length) return total;
  }
}

const readSyncAt = (fd: number, buf: Buffer, off: number, pos: number) => readSync(fd, buf, off, buf.length - off, pos);
