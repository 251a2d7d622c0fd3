/**
 * Model files on disk (Node only): read with the external-data checks, write atomically, and
 * carry external data along when the output goes to another folder.
 */
import { closeSync, existsSync, mkdirSync, openSync, readSync, readlinkSync, realpathSync, rmdirSync, statSync, unlinkSync } from 'node:fs';
import path from 'node:path';
import { decodeModel, encodeModelPieces } from '../graph/codec.js';
import { deferredPayloadOf, joinPieces, type EncodedPiece } from '../graph/deferred.js';
import { DEFAULT_DEFER_THRESHOLD, FilePayload, readCompact } from './lazy-read.js';
import { externalizeInitializers } from '../graph/external.js';
import type { Model } from '../graph/ir.js';
import { errorMessage, optionName } from '../graph/errors.js';
import { checkExternalData, openExternalDataFile, type ExternalDataFile } from './external-data.js';
import { InputChangedError, ModelTooLargeError, OutputWriteError, RefusedError } from './errors.js';
import { MAX_PROTOBUF_BYTES, ModelSource } from './model-source.js';
import { copyFileAtomic, makeFolders, resolveWriteTarget, writeAtomic, writeError, writeFileAtomic } from './atomic-write.js';
import { lstatOrUndefined } from './fs-facts.js';

export { MAX_PROTOBUF_BYTES, ModelSource, writeFileAtomic };

export interface LoadedModel {
  model: Model;
  /** Absolute path, or undefined when read from memory / stdin. */
  path: string | undefined;
  /** Folder external data is resolved against. */
  dir: string;
  size: number;
  externalData: ExternalDataFile[];
  /**
   * The model file, held open while payloads are still in it (undefined when everything was read
   * into memory). Payloads are read from this descriptor, not by path. An in-place save replaces
   * it with the file just written.
   */
  source: ModelSource | undefined;
  /** Releases the held model file; call when done with the model. Safe to call more than once. */
  close(): void;
}

export interface ReadOptions {
  /** Tensor payloads at least this large stay on disk until needed (default 1 MiB; Infinity reads everything). */
  deferThreshold?: number;
}

/**
 * Reads and decodes a model file; every external-data reference is checked before any data file is
 * opened. Large payloads are not read: they stay in the file, which is held open until `close()`,
 * and are streamed from it when the model is saved. Anything but a regular file of at most 2 GiB
 * is refused before reading.
 */
export function readModelFile(file: string, options: ReadOptions = {}): LoadedModel {
  const full = path.resolve(file);
  const threshold = options.deferThreshold ?? DEFAULT_DEFER_THRESHOLD;
  const source = ModelSource.openModel(full);
  try {
    if (!Number.isFinite(threshold)) {
      const bytes = new Uint8Array(source.size);
      source.readInto(bytes, 0, bytes.length, 0);
      source.close();
      return loadedModel(bytes, full, bytes.length, undefined);
    }
    const compact = readCompact(source, threshold);
    if (!compact.source) source.close();
    return loadedModel(compact.bytes, full, compact.size, compact.source);
  } catch (error) {
    source.close();
    throw error;
  }
}

/** Decodes model bytes that came from `file` (or from stdin when `file` is undefined). */
export function loadModelBytes(bytes: Uint8Array, file: string | undefined): LoadedModel {
  return loadedModel(bytes, file, bytes.length, undefined);
}

function loadedModel(bytes: Uint8Array, file: string | undefined, size: number, source: ModelSource | undefined): LoadedModel {
  const model = decodeModel(bytes);
  const dir = file ? path.dirname(file) : process.cwd();
  const externalData = checkExternalData(model, dir);
  if (!file && externalData.length) {
    throw new RefusedError(`A model read from stdin cannot use external data (it references ${externalData.map((f) => f.location).join(', ')}); pass the model's file path instead.`);
  }
  const loaded: LoadedModel = { model, path: file, dir, size, externalData, source, close: () => loaded.source?.close() };
  return loaded;
}

/** `file`'s path with every symbolic link resolved, also when `file` (or some of its folders) does not exist yet. */
function realPathOf(file: string): string {
  try { return realpathSync(file); } catch {
    const parent = path.dirname(file);
    return parent === file ? file : path.join(realPathOf(parent), path.basename(file));
  }
}

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
  /** Bytes of the external data copied (the files' lengths), and the disk space the copies take (holes stay holes). */
  copiedDataBytes: number;
  copiedDataAllocated: number;
}

/** Same file on disk (after resolving links); false if either does not exist. */
export function sameFile(a: string, b: string): boolean {
  if (!existsSync(b) || !existsSync(a)) return false;
  return realpathSync(a) === realpathSync(b);
}

/**
 * Encodes and writes `loaded.model` to `dest`, keeping its external data reachable. Payloads come
 * from the model's held file (`loaded.source`), which must be unchanged since loading: checked
 * before the write and again before the rename, otherwise nothing is written. A symbolic link at
 * `dest` stays a link (its target is written). `dest` may not be an external data file the model reads.
 */
export async function saveModelFile(loaded: LoadedModel, dest: string, options: SaveOptions = {}): Promise<SaveResult> {
  try {
    return await save(loaded, dest, options);
  } catch (error) {
    throw writeError(`write ${dest}`, error);
  }
}

async function save(loaded: LoadedModel, dest: string, options: SaveOptions): Promise<SaveResult> {
  const target = resolveWriteTarget(dest);
  const overInput = loaded.path !== undefined && sameFile(loaded.path, target);
  if (overInput && !options.inPlace) {
    throw new RefusedError(errorMessage`Refusing to overwrite the input ${loaded.path}; pass ${optionName('inPlace')} to modify it, or choose another output.`);
  }
  refuseDataFileAsOutput(loaded, target);
  const held = loaded.source && !loaded.source.closed ? loaded.source : undefined;
  const replacesHeld = overInput && held !== undefined;
  if (replacesHeld && !held.isFile(statSync(target))) {
    throw new InputChangedError(`${loaded.path} was replaced by another file since it was loaded; saving in place would discard that file. Nothing was written; load it again and rerun.`);
  }
  const { pieces, length } = encodeChecked(loaded.model);
  const sources = new Set<ModelSource>();
  for (const piece of pieces) if (piece instanceof FilePayload) sources.add(piece.file);
  const checkSources = () => { for (const source of sources) source.checkUnchanged(); };
  checkSources();
  const carried = carry(loaded, path.dirname(target));
  let kept: ModelSource | undefined;
  try {
    ({ kept } = await writeAtomic(target, streamPieces(pieces), {
      onProgress: options.onProgress ? (w) => options.onProgress!(w, length) : undefined,
      beforeRename: checkSources,
      keepOpen: replacesHeld && sources.has(held),
    }));
  } catch (error) {
    carried.undo();
    throw error;
  }
  if (replacesHeld) {
    if (kept) retargetReplacedPayloads(pieces, held, kept);
    held.close();
    loaded.source = kept;
  }
  return { path: target, bytes: length, copiedData: carried.copiedData, reusedData: carried.reusedData, copiedDataBytes: carried.bytes, copiedDataAllocated: carried.allocated };
}

/**
 * The output may not be, nor replace, an external data file the model reads: neither the file
 * itself nor the copy the saved model will read beside the output.
 */
function refuseDataFileAsOutput(loaded: LoadedModel, target: string): void {
  if (!loaded.externalData.length) return;
  const real = realPathOf(target);
  const outputFolder = realPathOf(path.dirname(target));
  let targetStat;
  try { targetStat = statSync(target); } catch { targetStat = undefined; }
  for (const file of loaded.externalData) {
    const data = realPathOf(file.path);
    const copy = path.join(outputFolder, file.location);
    let same = real === data || real === copy;
    if (!same && targetStat && file.present) {
      try { const st = statSync(file.path); same = st.dev === targetStat.dev && st.ino === targetStat.ino; } catch { /* gone: nothing to replace */ }
    }
    if (same) {
      const which = real === copy && copy !== data ? `the copy of ${file.path} the saved model would read` : file.path;
      throw new RefusedError(`Refusing to write ${target}: that is the external data file "${file.location}" the model reads its weights from (${which}). Choose another output name.`);
    }
  }
}

/**
 * After writing over the file deferred payloads were read from (an in-place save), points them at
 * their places in the new file, so the model in memory stays readable.
 */
function retargetReplacedPayloads(pieces: EncodedPiece[], from: ModelSource, to: ModelSource): void {
  let offset = 0;
  for (const piece of pieces) {
    if (piece instanceof FilePayload && piece.file === from) { piece.file = to; piece.offset = offset; }
    offset += piece.length;
  }
}

const COPY_BUFFER = 4 << 20;

/**
 * Byte pieces as they are; deferred payloads read from their held file through two reused buffers
 * in turn (a yielded buffer is refilled only after the iterator resumes twice, see writeFileAtomic).
 * Packing small pieces and payloads into full buffers (fewer writes, at 4 MiB-aligned file
 * positions) was tried: it made the kernel's copy into the page cache 2.4x slower here (system
 * time 0.46 s against 0.19 s for the 583 MB bench model), so each payload chunk starts a buffer.
 */
export function* streamPieces(pieces: Iterable<EncodedPiece>): Iterable<Uint8Array> {
  let buffers: [Uint8Array, Uint8Array] | undefined;
  let turn = 0;
  for (const piece of pieces) {
    if (piece instanceof Uint8Array) { yield piece; continue; }
    if (!(piece instanceof FilePayload)) { yield piece.read(); continue; }
    buffers ??= [new Uint8Array(COPY_BUFFER), new Uint8Array(COPY_BUFFER)];
    for (let done = 0; done < piece.length;) {
      const buffer = buffers[turn ^= 1]!;
      const n = Math.min(buffer.length, piece.length - done);
      piece.file.readInto(buffer, 0, n, piece.offset + done);
      done += n;
      yield buffer.subarray(0, n);
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
  return { path: target, bytes: length, copiedData: [], reusedData: [], copiedDataBytes: 0, copiedDataAllocated: 0 };
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
 * system offers one; holes stay holes, see copyFileAtomic), never over a different file. Missing data files are skipped (reported by inspect).
 * Destinations are checked like sources: inside `destDir`'s real path, no symbolic link on the
 * way or at the file. A refused or failed copy removes what this call copied.
 */
export function carryExternalData(loaded: LoadedModel, destDir: string): { copiedData: string[]; reusedData: string[]; bytes: number; allocated: number } {
  const { copiedData, reusedData, bytes, allocated } = carry(loaded, destDir);
  return { copiedData, reusedData, bytes, allocated };
}

interface Carried {
  copiedData: string[];
  reusedData: string[];
  /** Lengths of the copies, and the disk space they take. */
  bytes: number;
  allocated: number;
  /** Removes the copies made (and the folders created for them), never files that were there before. */
  undo(): void;
}

function carry(loaded: LoadedModel, destDir: string): Carried {
  const copiedData: string[] = [];
  const reusedData: string[] = [];
  const createdFolders: string[] = [];
  const undo = () => {
    for (const file of copiedData.splice(0)) { try { unlinkSync(file); } catch { /* already gone */ } }
    for (const dir of createdFolders.splice(0).reverse()) { try { rmdirSync(dir); } catch { /* not empty: keep */ } }
  };
  const carried: Carried = { copiedData, reusedData, bytes: 0, allocated: 0, undo };
  if (!loaded.externalData.length || sameFile(loaded.dir, destDir)) return carried;
  try {
    const full = path.resolve(destDir);
    createdFolders.push(...makeFolders(full));
    const root = realpathSync(full);
    for (const file of loaded.externalData) {
      if (!file.present) continue;
      const target = path.join(root, file.location);
      dataFolderInside(root, file.location, createdFolders);
      const existing = lstatOrUndefined(target);
      if (existing?.isSymbolicLink()) {
        throw new RefusedError(`Refusing to copy external data "${file.location}" to ${target}: it is a symbolic link (to ${readlinkOr(target)}); data files are written only as regular files inside ${root}. Remove the link, or write the model to another folder.`);
      }
      // The source is opened once and checked (still the file checked at load, inside the model's
      // folder); the copy reads that descriptor, so swapping the file for a link now changes nothing.
      const fd = openExternalDataFile(file);
      try {
        const source = descriptorPath(fd, file.realPath!);
        if (existing) {
          if (existing.isFile() && sameContent(source, target)) { reusedData.push(target); continue; }
          throw new RefusedError(`Refusing to overwrite ${target}: a different file of that name is already there. Write the model to another folder, or next to its data.`);
        }
        const copy = copyFileAtomic(source, target, `copy external data ${file.path} to ${target}`, fd);
        copiedData.push(target);
        carried.bytes += copy.bytes;
        carried.allocated += copy.allocated;
      } finally {
        closeSync(fd);
      }
    }
    return carried;
  } catch (error) {
    undo();
    throw writeError(`copy external data to ${destDir}`, error);
  }
}

/**
 * The folder data file `location` goes to under `root`, created as needed. Every existing part
 * must be a real folder: a symbolic link could lead the copy anywhere.
 */
function dataFolderInside(root: string, location: string, created: string[]): string {
  let dir = root;
  for (const part of path.posix.dirname(location).split('/')) {
    if (part === '.' || part === '') continue;
    dir = path.join(dir, part);
    const st = lstatOrUndefined(dir);
    if (!st) { mkdirSync(dir); created.push(dir); continue; }
    if (st.isSymbolicLink()) {
      throw new RefusedError(`Refusing to copy external data "${location}" through ${dir}: that folder is a symbolic link (to ${readlinkOr(dir)}); data files are written only inside ${root}. Replace the link with a folder, or write the model to another folder.`);
    }
    if (!st.isDirectory()) throw new OutputWriteError(`Cannot copy external data "${location}": ${dir} is a file, not a folder. Write the model to another folder.`);
  }
  const real = realpathSync(dir);
  if (real !== dir) throw new RefusedError(`Refusing to copy external data "${location}": ${dir} resolves to ${real}, not inside ${root}. Write the model to another folder.`);
  return dir;
}

function readlinkOr(file: string): string {
  try { return readlinkSync(file); } catch { return '?'; }
}

/** A path that opens the file behind `fd` (Linux's /proc/self/fd), else the path it was opened from. */
export function descriptorPath(fd: number, opened: string): string {
  const viaProc = `/proc/self/fd/${fd}`;
  return existsSync(viaProc) ? viaProc : opened;
}

/** Same bytes (sizes first, then 1 MiB chunks). */
export function sameContent(a: string, b: string): boolean {
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
