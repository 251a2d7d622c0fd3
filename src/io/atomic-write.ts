/**
 * Writing files so that a failure or a kill never leaves a half-written destination: a hidden temp
 * file in the destination's folder, renamed into place. Every failed system call becomes a typed
 * OutputWriteError naming the file, the errno and what to do.
 */
import { closeSync, constants, copyFileSync, existsSync, fstatSync, lstatSync, mkdirSync, openSync, readdirSync, readlinkSync, realpathSync, renameSync, statSync, unlinkSync } from 'node:fs';
import path from 'node:path';
import { createRequire } from 'node:module';
import type { FileHandle } from 'node:fs/promises';
import { OnnxNeftuneError } from '../graph/errors.js';
import { OutputWriteError } from './errors.js';
import { ModelSource } from './model-source.js';
import { errnoOf } from './fs-facts.js';

// Loaded when first needed: a command that writes nothing (inspect, --version) does not pay for them.
const requireBuiltin = createRequire(import.meta.url);
const crypto = () => requireBuiltin('node:crypto') as typeof import('node:crypto');
const childProcess = () => requireBuiltin('node:child_process') as typeof import('node:child_process');
const fsPromises = () => requireBuiltin('node:fs/promises') as typeof import('node:fs/promises');

/** A hidden temp file name in `dest`'s folder (the rename into place then stays on one file system). */
function tempPathBeside(dest: string): string {
  const full = path.resolve(dest);
  return path.join(path.dirname(full), `.${path.basename(full)}.${process.pid}.${crypto().randomBytes(4).toString('hex')}.tmp`);
}

/** tempPathBeside's names: `.<name>.<pid>.<8 hex>.tmp`. */
const TEMP_NAME = /^\..+\.(\d{1,10})\.[0-9a-f]{8}\.tmp$/;
const sweptFolders = new Set<string>();

/**
 * Removes temp files a killed run (SIGKILL, power loss) left in `dir`: only names of exactly
 * tempPathBeside's pattern, only regular files, only when that pid is not a live process and the
 * file was last modified before this process started. Once per folder: a file left later cannot
 * be older than this process.
 */
export function sweepStaleTempFiles(dir: string): void {
  if (sweptFolders.has(dir)) return;
  sweptFolders.add(dir);
  let names: string[];
  try { names = readdirSync(dir); } catch { return; }
  for (const name of names) {
    const pid = Number(TEMP_NAME.exec(name)?.[1] ?? 0);
    if (pid < 1 || pid > 2 ** 31 - 1 || pid === process.pid || processAlive(pid)) continue;
    const file = path.join(dir, name);
    try {
      const st = lstatSync(file);
      if (st.isFile() && st.mtimeMs < performance.timeOrigin) unlinkSync(file);
    } catch { /* gone already, or not ours to remove */ }
  }
}

function processAlive(pid: number): boolean {
  try { process.kill(pid, 0); return true; } catch (error) { return (error as NodeJS.ErrnoException).code === 'EPERM'; }
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
 * The file a write to `dest` lands in: `dest`, or the file a symbolic link at `dest` points to
 * (the link stays a link, as with `cp` or a shell redirection).
 */
export function resolveWriteTarget(dest: string): string {
  const full = path.resolve(dest);
  let st;
  try { st = lstatSync(full); } catch { return full; }
  if (!st.isSymbolicLink()) return full;
  try { return realpathSync(full); } catch (error) {
    let to = '?';
    try { to = readlinkSync(full); } catch { /* reported as '?' */ }
    throw new OutputWriteError(`Cannot write ${full}: it is a symbolic link to ${to}, which does not resolve (${errnoOf(error)}). Remove the link or create its target first.`, { cause: error });
  }
}

/**
 * Creates `dir` and its missing parents; returns those created, outermost first. (Node's recursive
 * mkdir reports ENOENT where the file system is read-only; here each mkdir reports its own errno.)
 */
export function makeFolders(dir: string): string[] {
  const missing: string[] = [];
  for (let d = path.resolve(dir); ; d = path.dirname(d)) {
    let st;
    try { st = statSync(d); } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'ENOENT' || d === path.dirname(d)) throw error;
      missing.unshift(d);
      continue;
    }
    if (!st.isDirectory()) mkdirSync(d); // fails with EEXIST, naming the file in the way
    break;
  }
  const created: string[] = [];
  for (const d of missing) {
    try { mkdirSync(d); created.push(d); } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST' || !statSync(d).isDirectory()) throw error;
    }
  }
  return created;
}

const WRITE_ADVICE: Record<string, string> = {
  ENOTDIR: 'Part of the output path is a file, not a folder; choose another output path.',
  EEXIST: 'Part of the output path is a file, not a folder; choose another output path.',
  EISDIR: 'The output path is a folder; name a file inside it.',
  EACCES: 'No permission to write there; choose a folder you can write to.',
  EPERM: 'The operation is not permitted there; choose a folder you can write to.',
  EROFS: 'That file system is read-only; choose an output on a writable one.',
  ENOSPC: 'The disk is full; free some space or write elsewhere.',
  EDQUOT: 'The disk quota is used up; free some space or write elsewhere.',
  ENOENT: 'A folder on the output path does not exist or was removed during the write; check the path.',
  ENAMETOOLONG: 'The output path is too long; choose a shorter one.',
  ELOOP: 'The output path has a loop of symbolic links; check the path.',
  EMFILE: 'Too many files are open; retry with fewer models at once.',
  ENFILE: 'Too many files are open on this system; retry later.',
  EIO: 'The disk reported an I/O error; check it, or write elsewhere.',
};

/**
 * A failed system call of a write as a typed error naming the file, the errno and what to do.
 * Typed errors pass through; anything else (a bug, not the disk) is left as it is.
 */
export function writeError(what: string, error: unknown): unknown {
  const e = error as NodeJS.ErrnoException & { dest?: string };
  if (error instanceof OnnxNeftuneError || typeof e?.code !== 'string' || typeof e.syscall !== 'string') return error;
  const at = e.path ? ` (${e.syscall} ${e.path}${e.dest ? ` -> ${e.dest}` : ''})` : '';
  const advice = WRITE_ADVICE[e.code] ?? 'Check the output path and try again.';
  return new OutputWriteError(`Cannot ${what}: ${e.code}${at}. ${advice}`, { cause: error });
}

export interface AtomicWriteOptions {
  onProgress?: ((written: number) => void) | undefined;
  /** Runs when every byte is in the temp file, before the rename; a throw abandons the write. */
  beforeRename?: (() => void) | undefined;
  /** Keep the written file open and return it (a model that goes on reading payloads from it). */
  keepOpen?: boolean;
}

/**
 * Writes `chunks` to `dest` atomically: a temp file in the destination folder, then renamed over
 * `dest`. On failure, SIGINT or SIGTERM the temp file is removed and `dest` is as it was. (SIGKILL
 * cannot be caught: `dest` is still intact, but a stray temp file may remain; the next write into
 * that folder removes it.) A symbolic link at `dest` stays: the file it points to is replaced.
 * When the rename replaces an existing file, the temp file is flushed to disk first, so a power
 * loss cannot cost the old content; a new file is not flushed (as with `cp`): the input is intact.
 * One write is in flight while the next chunk is produced; chunks go out in slices with the event
 * loop free in between, so signals are handled mid-write. A chunk must stay unchanged until the
 * iterator has been resumed twice after yielding it (`streamPieces` double-buffers).
 * Every failure is a OutputWriteError naming the file and the errno.
 */
export async function writeFileAtomic(dest: string, chunks: Iterable<Uint8Array>, onProgress?: (written: number) => void): Promise<number> {
  return (await writeAtomic(dest, chunks, { onProgress })).written;
}

export async function writeAtomic(dest: string, chunks: Iterable<Uint8Array>, options: AtomicWriteOptions): Promise<{ written: number; kept: ModelSource | undefined }> {
  let target = path.resolve(dest);
  let temp: string | undefined;
  let handle: FileHandle | undefined;
  let kept: ModelSource | undefined;
  let inFlight: Promise<void> | undefined;
  let written = 0;
  try {
    target = resolveWriteTarget(dest);
    const dir = path.dirname(target);
    makeFolders(dir);
    sweepStaleTempFiles(dir);
    temp = tempPathBeside(target);
    const replacing = existsSync(target);
    hookSignals();
    liveTempFiles.add(temp);
    const file = handle = await fsPromises().open(temp, 'wx', 0o644);
    const writeAll = async (slice: Uint8Array, position: number) => {
      for (let off = 0; off < slice.length;) off += (await file.write(slice, off, slice.length - off, position + off)).bytesWritten;
      written += slice.length;
      options.onProgress?.(written);
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
    const writtenFile = options.keepOpen ? await handle.stat() : undefined;
    await handle.close();
    handle = undefined;
    if (writtenFile) kept = reopenWritten(temp, target, writtenFile);
    options.beforeRename?.();
    renameSync(temp, target);
    liveTempFiles.delete(temp);
    return { written, kept };
  } catch (error) {
    if (inFlight) { try { await inFlight; } catch { /* reported below */ } }
    if (handle) { try { await handle.close(); } catch { /* ignore */ } }
    kept?.close();
    if (temp) {
      try { unlinkSync(temp); } catch { /* ignore */ }
      liveTempFiles.delete(temp);
    }
    throw writeError(`write ${target}`, error);
  }
}

/** Opens the temp file just written for reading, checking it is still the file written (same inode). */
function reopenWritten(temp: string, target: string, written: { dev: number; ino: number }): ModelSource {
  const fd = openSync(temp, constants.O_RDONLY | constants.O_NOFOLLOW);
  const st = fstatSync(fd);
  if (st.dev !== written.dev || st.ino !== written.ino) {
    closeSync(fd);
    throw new OutputWriteError(`Cannot write ${target}: the temp file ${temp} was replaced by another program during the write; nothing was written. Retry.`);
  }
  return ModelSource.adopt(target, fd);
}

function* slices(chunks: Iterable<Uint8Array>): Iterable<Uint8Array> {
  for (const chunk of chunks) {
    for (let off = 0; off < chunk.length; off += WRITE_SLICE) yield chunk.subarray(off, Math.min(chunk.length, off + WRITE_SLICE));
  }
}

const WRITE_SLICE = 8 << 20;

/** What a copy wrote: the file's length, and the space it takes on disk (less when holes stayed holes or blocks are shared). */
export interface CopiedFile { bytes: number; allocated: number }

/**
 * Copies `from` to `to` through a temp file beside `to`. `fd`, when given, is the source opened and
 * checked by the caller: the copy reads that file (through /proc/self/fd), never the path again.
 * On Linux GNU cp does the copy (`--sparse=auto --reflink=auto`): a copy-on-write clone where the
 * file system offers one, else the data extents only (SEEK_DATA/SEEK_HOLE, which Node's fs lacks)
 * copied in the kernel, so holes stay holes. Elsewhere, or without GNU cp, fs.copyFile with
 * COPYFILE_FICLONE (a clone, else a full copy).
 */
export function copyFileAtomic(from: string, to: string, what: string, fd?: number): CopiedFile {
  sweepStaleTempFiles(path.dirname(to));
  const temp = tempPathBeside(to);
  hookSignals();
  liveTempFiles.add(temp);
  try {
    if (!copyWithCp(fd, temp, what)) copyFileSync(fd === undefined ? from : descriptorSource(fd, from), temp, constants.COPYFILE_EXCL | constants.COPYFILE_FICLONE);
    const st = lstatSync(temp);
    if (fd !== undefined && st.size !== fstatSync(fd).size) {
      throw new OutputWriteError(`Cannot ${what}: the copy has ${st.size} bytes, the source ${fstatSync(fd).size}; the source changed during the copy. Nothing was written; run again.`);
    }
    renameSync(temp, to);
    return { bytes: st.size, allocated: st.blocks * 512 };
  } catch (error) {
    try { unlinkSync(temp); } catch { /* ignore */ }
    throw writeError(what, error);
  } finally {
    liveTempFiles.delete(temp);
  }
}

const descriptorSource = (fd: number, fallback: string) => existsSync(`/proc/self/fd/${fd}`) ? `/proc/self/fd/${fd}` : fallback;

let gnuCp = process.platform === 'linux';

/**
 * Copies the file open as `fd` to `temp` with GNU cp, which gets the descriptor as its stdin and
 * opens it as /proc/self/fd/0 (the same file, whatever the path now names). False when cp is not
 * there or not GNU cp: the caller copies instead. `--remove-destination`: never write through
 * something put at the temp name.
 */
function copyWithCp(fd: number | undefined, temp: string, what: string): boolean {
  if (!gnuCp || fd === undefined) return false;
  const run = childProcess().spawnSync('cp', ['--sparse=auto', '--reflink=auto', '--remove-destination', '-T', '--', '/proc/self/fd/0', temp], {
    stdio: [fd, 'ignore', 'pipe'], encoding: 'utf8',
  });
  if (run.error || /unrecognized option|invalid option|unknown option/.test(run.stderr ?? '')) {
    gnuCp = false;
    try { unlinkSync(temp); } catch { /* not made */ }
    return false;
  }
  if (run.status !== 0) {
    const message = (run.stderr ?? '').trim() || `cp ended with ${run.signal ?? `status ${run.status}`}`;
    const advice = /No space left/.test(message) ? ' The disk is full; free some space or write elsewhere.' : /Permission denied/.test(message) ? ' Choose a folder you can write to.' : '';
    throw new OutputWriteError(`Cannot ${what}: ${message}.${advice}`);
  }
  return true;
}
