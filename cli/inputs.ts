/**
 * Turns the command line's model arguments into the files to process and where each one goes.
 * Every path is stat'ed before anything is opened (a FIFO would block an open), and every output
 * is planned before anything is written: outputs that collide are refused, never renamed.
 */
import { readdirSync, realpathSync, statSync, type Dirent, type Stats } from 'node:fs';
import path from 'node:path';
import type { OnnxNeftuneError } from '../src/graph/errors.js';
import { readModelFile, type LoadedModel } from '../src/io/index.js';
import { UsageError, fsError, isErrno, type SkippedEntry } from './errors.js';

export { UsageError, type SkippedEntry } from './errors.js';

export interface Job {
  /** Path as the user sees it, or '-' for stdin. */
  input: string;
  /** Destination path, '-' for stdout, or undefined (dry run / inspect). */
  output: string | undefined;
  /** A note for the report (e.g. why a file of an artifacts folder was chosen). */
  note?: string;
  /** Known while planning, before anything was opened: the job fails with it (e.g. an unreadable folder). */
  planError?: OnnxNeftuneError;
  /** The model as loaded while planning; kept only for a single job, so it is not decoded twice. */
  preloaded?: { loaded: LoadedModel } | { error: unknown };
}

export interface Plan { jobs: Job[]; skipped: SkippedEntry[] }

const TRAINING_ARTIFACT = 'training_model.onnx';

type Kind = Pick<Stats, 'isFIFO' | 'isSocket' | 'isCharacterDevice' | 'isBlockDevice' | 'isDirectory' | 'isSymbolicLink'>;

function kindOf(entry: Kind): string {
  if (entry.isFIFO()) return 'a FIFO (named pipe)';
  if (entry.isSocket()) return 'a socket';
  if (entry.isCharacterDevice()) return 'a character device';
  if (entry.isBlockDevice()) return 'a block device';
  if (entry.isDirectory()) return 'a folder';
  if (entry.isSymbolicLink()) return 'a symbolic link';
  return 'not a regular file';
}

/** Why a symbolic link found in a batch folder is listed as skipped, or undefined when it does not matter. */
function symlinkReason(full: string, name: string): string | undefined {
  let target: Stats | undefined;
  try { target = statSync(full); } catch { target = undefined; }
  if (target?.isDirectory()) return 'symbolic link to a folder: not followed (pass the folder itself to process it)';
  if (!name.endsWith('.onnx')) return undefined;
  if (!target) return 'symbolic link that does not resolve (broken, or a loop): not followed';
  return 'symbolic link: not followed in a folder (pass the file by name to process it)';
}

/** Why a `.onnx` entry of a batch folder is not processed, or undefined for a regular file. */
function entryReason(entry: Dirent, full: string): string | undefined {
  if (entry.isFile()) return undefined;
  if (entry.isSymbolicLink()) return symlinkReason(full, entry.name) ?? 'symbolic link: not followed';
  return `${kindOf(entry)}: never opened`;
}

interface Found { file: string; base: string | undefined; note?: string; planError?: OnnxNeftuneError }

const byName = (a: Dirent, b: Dirent) => a.name.localeCompare(b.name);

/**
 * Every regular .onnx file under `dir`, sorted, or just training_model.onnx for an ORT
 * training-artifacts folder. Symbolic links, FIFOs, sockets and devices are listed in `skipped`
 * and never opened; symlinked folders are not followed. An unreadable folder becomes a failed job.
 */
function expandDirectory(dir: string, skipped: SkippedEntry[]): Found[] {
  let entries: Dirent[];
  try { entries = readdirSync(dir, { withFileTypes: true }); } catch (error) {
    return [{ file: dir, base: undefined, planError: fsError(error, `folder ${dir}`) }];
  }
  const artifact = entries.find((e) => e.name === TRAINING_ARTIFACT);
  if (artifact) {
    const full = path.join(dir, TRAINING_ARTIFACT);
    const reason = entryReason(artifact, full);
    if (reason) { skipped.push({ path: full, reason }); return []; }
    const others = entries.filter((e) => e.name.endsWith('.onnx') && e.name !== TRAINING_ARTIFACT).sort(byName).map((e) => e.name);
    return [{
      file: full, base: dir,
      note: `ONNX Runtime training artifacts folder: only ${TRAINING_ARTIFACT} is processed${others.length ? `; not processed: ${others.join(', ')}` : ''}`,
    }];
  }
  const found: Found[] = [];
  const walk = (d: string, list: Dirent[]) => {
    for (const entry of list.sort(byName)) {
      const full = path.join(d, entry.name);
      if (entry.isDirectory()) {
        let sub: Dirent[];
        try { sub = readdirSync(full, { withFileTypes: true }); } catch (error) {
          found.push({ file: full, base: undefined, planError: fsError(error, `folder ${full}`) });
          continue;
        }
        walk(full, sub);
      } else if (entry.isSymbolicLink()) {
        const reason = symlinkReason(full, entry.name);
        if (reason) skipped.push({ path: full, reason });
      } else if (entry.name.endsWith('.onnx')) {
        const reason = entryReason(entry, full);
        if (reason) skipped.push({ path: full, reason });
        else found.push({ file: full, base: dir });
      }
    }
  };
  walk(dir, entries);
  return found;
}

/** stat, or undefined when the path does not exist; other failures (EACCES, ELOOP) are typed. */
function statIfExists(p: string, what: string): Stats | undefined {
  try { return statSync(p); } catch (error) {
    // ENOTDIR: a file stands where a folder of the path should be, so nothing is there (the write then says why it fails).
    if (isErrno(error, 'ENOENT', 'ENOTDIR')) return undefined;
    throw fsError(error, what);
  }
}

/** inspect and verify take one model file: a folder or a FIFO is a usage error, found before anything is opened. */
export function checkModelPath(input: string, command: string): void {
  if (input === '-') return;
  const st = statIfExists(input, input);
  if (!st) return; // reading it reports the missing file (FILE_ACCESS)
  if (st.isDirectory()) throw new UsageError(`${input} is a folder; ${command} takes one model file (patch and strip take folders).`);
  if (!st.isFile()) throw new UsageError(`${input} is ${kindOf(st)}, not a model file. To read a model from a pipe, use '-': neftune ${command} - < ${input}`);
}

export function planJobs(args: string[], options: { output?: string; inPlace?: boolean; dryRun?: boolean; needsOutput: boolean }): Plan {
  if (!args.length) throw new UsageError('Give at least one model file or folder');
  if (options.output !== undefined && options.inPlace) throw new UsageError('Use either -o/--output or --in-place, not both');
  const expanded: Found[] = [];
  const skipped: SkippedEntry[] = [];
  const notFiles: string[] = [];
  let fromFolder = false;
  for (const arg of args) {
    if (arg === '-') { expanded.push({ file: '-', base: undefined }); continue; }
    let st: Stats;
    try { st = statSync(arg); } catch (error) {
      expanded.push({ file: arg, base: undefined, planError: fsError(error, arg) });
      continue;
    }
    if (st.isDirectory()) {
      fromFolder = true;
      const before = skipped.length;
      const files = expandDirectory(arg, skipped);
      if (!files.length) {
        const mine = skipped.slice(before);
        throw new UsageError(mine.length
          ? `Folder ${arg} has no model to process; skipped:\n${mine.map((s) => `  ${s.path}: ${s.reason}`).join('\n')}`
          : `Folder ${arg} contains no .onnx file`, { skipped: mine });
      }
      expanded.push(...files);
    } else if (st.isFile()) {
      expanded.push({ file: arg, base: undefined });
    } else {
      notFiles.push(`${arg} is ${kindOf(st)}, not a model file`);
    }
  }
  if (notFiles.length) throw new UsageError(`${notFiles.join('; ')}. Give model files or folders; to read a model from a pipe, use '-' (stdin).`);
  const many = expanded.length > 1 || fromFolder;
  if (expanded.filter((e) => e.file === '-').length && many) throw new UsageError("'-' (stdin) works only with a single model");
  const job = (e: Found, output: string | undefined): Job =>
    ({ input: e.file, output: e.planError ? undefined : output, ...(e.note ? { note: e.note } : {}), ...(e.planError ? { planError: e.planError } : {}) });

  if (!options.needsOutput || options.dryRun) return { jobs: expanded.map((e) => job(e, undefined)), skipped };
  let jobs: Job[];
  if (options.inPlace) {
    if (expanded.some((e) => e.file === '-')) throw new UsageError('--in-place needs a file, not stdin');
    jobs = expanded.map((e) => job(e, e.file));
  } else if (options.output === undefined) {
    if (expanded.length === 1 && expanded[0]!.file === '-') return { jobs: [{ input: '-', output: '-' }], skipped };
    throw new UsageError('Say where to write: -o <file|folder>, -o - for stdout, or --in-place');
  } else if (options.output === '-') {
    if (many) throw new UsageError('-o - (stdout) works only with a single model');
    jobs = [job(expanded[0]!, '-')];
  } else {
    const out = options.output;
    const existing = statIfExists(out, `output ${out}`);
    if (many && existing && !existing.isDirectory()) throw new UsageError(`-o ${out} is ${existing.isFile() ? 'a file' : kindOf(existing)}, but several models need a folder to go to`);
    const outIsDir = many || out.endsWith('/') || out.endsWith(path.sep) || !!existing?.isDirectory();
    jobs = !outIsDir ? [job(expanded[0]!, out)] : expanded.map((e) => {
      const rel = e.file === '-' ? 'model.onnx' : e.base ? path.relative(e.base, e.file) : path.basename(e.file);
      return job(e, path.join(out, rel));
    });
  }
  refuseCollisions(jobs);
  return { jobs, skipped };
}

/** The real path of `p` with links resolved, or its absolute path when it cannot be resolved. */
function realOrResolved(p: string): string {
  try { return realpathSync(p); } catch { return path.resolve(p); }
}

/**
 * The directory entry a write to `p` replaces: its folder's real path plus its name. (A write
 * renames a temp file over the entry, so a symbolic link there is replaced, not its target.)
 * Folders that do not exist yet are resolved from their nearest existing parent.
 */
export function entryKey(p: string): string {
  const full = path.resolve(p);
  const missing: string[] = [path.basename(full)];
  for (let dir = path.dirname(full); ; dir = path.dirname(dir)) {
    try { return path.join(realpathSync(dir), ...missing); } catch { /* not there yet: try its parent */ }
    if (path.dirname(dir) === dir) return full;
    missing.unshift(path.basename(dir));
  }
}

const isInside = (file: string, dir: string) => file.startsWith(dir.endsWith(path.sep) ? dir : dir + path.sep);

/**
 * Refuses, before anything is written, a batch in which two jobs write the same file, or a job
 * writes over a file a job reads: another job's model, or any job's external data. External data
 * is only found by decoding the model, which happens only when some output lands inside that
 * model's folder (data files always live there); only the paths are kept, not the models.
 * A job writing over its own model is left to the save (--in-place, or refused with exit 5).
 */
function refuseCollisions(jobs: Job[]): void {
  const writers = jobs.filter((j) => !j.planError && j.output !== undefined && j.output !== '-');
  if (!writers.length) return;
  const dests = new Map<Job, string>(writers.map((j) => [j, entryKey(j.output!)]));
  const problems = new Set<string>();
  const byDest = new Map<string, Job[]>();
  for (const [j, key] of dests) byDest.set(key, [...(byDest.get(key) ?? []), j]);
  for (const same of byDest.values()) {
    if (same.length > 1) problems.add(`${same[0]!.output} would be written by ${same.length} models: ${same.map((j) => j.input).join(', ')}`);
  }
  const reads = new Map<string, Array<{ job: Job; file: string; model: boolean }>>();
  const read = (file: string, job: Job, model: boolean) => {
    for (const key of new Set([entryKey(file), realOrResolved(file)])) reads.set(key, [...(reads.get(key) ?? []), { job, file, model }]);
  };
  const destKeys = [...dests.values()];
  for (const j of jobs) {
    if (j.planError || j.input === '-') continue;
    read(j.input, j, true);
    const folder = realOrResolved(path.dirname(path.resolve(j.input)));
    if (destKeys.some((d) => isInside(d, folder))) for (const file of externalDataPaths(j, jobs.length === 1)) read(file, j, false);
  }
  for (const [j, key] of dests) {
    for (const r of reads.get(key) ?? []) {
      if (r.job === j && r.model) continue;
      problems.add(r.model
        ? `${j.output} (output of ${j.input}) would replace ${r.job.input}, an input of this run`
        : `${j.output} (output of ${j.input}) would replace ${r.file}, external data of ${r.job.input}`);
    }
  }
  if (!problems.size) return;
  throw new UsageError(`Refusing to write anything: ${problems.size === 1 ? 'an output collides' : `${problems.size} outputs collide`} with another output or an input:\n` +
    `${[...problems].map((p) => `  ${p}`).join('\n')}\n` +
    'Outputs are never renamed. Give each model its own -o, or pass the models\' common parent folder (outputs then keep their subfolders).');
}

/** The external-data files `job`'s model reads (present or not); none when it cannot be loaded (the job then fails on its own). */
function externalDataPaths(job: Job, keep: boolean): string[] {
  try {
    const loaded = readModelFile(job.input);
    if (keep) job.preloaded = { loaded };
    else loaded.close();
    return loaded.externalData.map((f) => f.path);
  } catch (error) {
    if (keep) job.preloaded = { error };
    return [];
  }
}
