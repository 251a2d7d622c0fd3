/**
 * Turns the command line's model arguments into the files to process and where each one goes.
 * Every path is stat'ed before anything is opened (a FIFO would block an open), and every output
 * is planned before anything is written: outputs that collide are refused, never renamed.
 */
import { lstatSync, readdirSync, realpathSync, statSync, type BigIntStats, type Dirent, type Stats } from 'node:fs';
import path from 'node:path';
import type { OnnxNeftuneError } from '../src/graph/errors.js';
import { OutputWriteError, RefusedError, readModelFile, type LoadedModel } from '../src/io/index.js';
import { UsageError, fsError, isErrno, type SkippedEntry } from './errors.js';
import { lstatOrUndefined } from '../src/io/fs-facts.js';

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
  /**
   * training_model.onnx of an ORT training-artifacts folder: the folder's other files, copied
   * unchanged beside the output (empty with --in-place: nothing is copied).
   */
  companions?: FolderFile[];
}

/** A file of a training-artifacts folder other than training_model.onnx, as found while planning. */
export interface FolderFile {
  /** Path inside the folder, POSIX separators; the copy gets the same path inside the output's folder. */
  rel: string;
  /** The file in the input folder. */
  from: string;
  /** Device, inode and size seen while planning (lstat): the copy must read this same file. */
  dev: bigint;
  ino: bigint;
  size: bigint;
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

interface Found { file: string; base: string | undefined; note?: string; planError?: OnnxNeftuneError; companions?: FolderFile[] }

const byName = (a: Dirent, b: Dirent) => a.name.localeCompare(b.name);

interface ExpandOptions {
  /** --in-place: an artifacts folder's other files are not copied. */
  inPlace: boolean;
  /** Real path of the -o folder, never copied into itself when it lies inside an artifacts folder. */
  outputFolder: string | undefined;
}

/**
 * Every regular .onnx file under `dir`, sorted. A folder (`dir` or any subfolder) holding
 * training_model.onnx is an ORT training-artifacts folder: only training_model.onnx is processed,
 * and its other files are copied unchanged beside the output. Symbolic links, FIFOs, sockets and
 * devices are listed in `skipped` and never opened; symlinked folders are not followed. An
 * unreadable folder becomes a failed job.
 */
function expandDirectory(dir: string, skipped: SkippedEntry[], options: ExpandOptions): Found[] {
  let entries: Dirent[];
  try { entries = readdirSync(dir, { withFileTypes: true }); } catch (error) {
    return [{ file: dir, base: undefined, planError: fsError(error, `folder ${dir}`) }];
  }
  const found: Found[] = [];
  const walk = (d: string, list: Dirent[]) => {
    const artifact = list.find((e) => e.name === TRAINING_ARTIFACT);
    if (artifact) {
      const job = artifactsFolder(d, dir, artifact, list, skipped, options);
      if (job) found.push(job);
      return;
    }
    for (const entry of list.sort(byName)) {
      const full = path.join(d, entry.name);
      if (entry.isDirectory()) {
        // The -o folder inside a batch folder holds this tool's outputs, not inputs (a second run would patch them again).
        if (options.outputFolder !== undefined && realOrResolved(full) === options.outputFolder) {
          skipped.push({ path: full, reason: 'the output folder of this run: its models are outputs, not inputs' });
          continue;
        }
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

/**
 * The job of training-artifacts folder `d` (batch root `base`): its training_model.onnx, with every
 * other regular file of the folder, subfolders included, to copy beside the output. A folder
 * whose training_model.onnx is not a regular file is skipped whole. Links and special files in it
 * are listed as skipped (never followed: the output folder lacks them). A subfolder that cannot be
 * read fails the job: the folder is copied whole or not at all.
 */
function artifactsFolder(d: string, base: string, artifact: Dirent, list: Dirent[], skipped: SkippedEntry[], options: ExpandOptions): Found | undefined {
  const full = path.join(d, TRAINING_ARTIFACT);
  const reason = entryReason(artifact, full);
  if (reason) { skipped.push({ path: full, reason: `${reason}; the training artifacts folder ${d} is not processed` }); return undefined; }
  const rule = options.inPlace
    ? `ONNX Runtime training artifacts folder: only ${TRAINING_ARTIFACT} is processed (in place); the folder's other files stay as they are`
    : `ONNX Runtime training artifacts folder: only ${TRAINING_ARTIFACT} is processed, and the folder's other files are copied unchanged beside it (nothing is copied when it fails)`;
  const job: Found = { file: full, base, note: rule };
  if (options.inPlace) return { ...job, companions: [] };
  const companions: FolderFile[] = [];
  const notCopied = 'so it is not copied: the output folder will not have it';
  const walk = (at: string, entries: Dirent[]): OnnxNeftuneError | undefined => {
    for (const entry of entries.sort(byName)) {
      const file = path.join(at, entry.name);
      if (at === d && entry.name === TRAINING_ARTIFACT) continue;
      if (entry.isSymbolicLink()) {
        skipped.push({ path: file, reason: `symbolic link: not followed, ${notCopied} (copy its target into the folder to include it)` });
      } else if (entry.isDirectory()) {
        if (options.outputFolder !== undefined && realOrResolved(file) === options.outputFolder) {
          skipped.push({ path: file, reason: 'the output folder of this run: not copied into itself' });
          continue;
        }
        let sub: Dirent[];
        try { sub = readdirSync(file, { withFileTypes: true }); } catch (error) {
          return fsError(error, `folder ${file} of the training artifacts folder ${d} (the folder is copied whole or not at all; make it readable, or move it out)`);
        }
        const failed = walk(file, sub);
        if (failed) return failed;
      } else if (entry.isFile()) {
        let st: BigIntStats;
        try { st = lstatSync(file, { bigint: true }); } catch (error) {
          return fsError(error, `${file} of the training artifacts folder ${d}`);
        }
        if (!st.isFile()) return fsError(new Error('replaced while the folder was read'), `${file} of the training artifacts folder ${d}`);
        companions.push({ rel: path.relative(d, file).split(path.sep).join('/'), from: file, dev: st.dev, ino: st.ino, size: st.size });
      } else {
        skipped.push({ path: file, reason: `${kindOf(entry)}: never opened, ${notCopied}` });
      }
    }
    return undefined;
  };
  const planError = walk(d, list);
  return planError ? { ...job, planError } : { ...job, companions };
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
  const expandOptions: ExpandOptions = {
    inPlace: !!options.inPlace,
    outputFolder: options.output !== undefined && options.output !== '-' ? realOrResolved(options.output) : undefined,
  };
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
      const files = expandDirectory(arg, skipped, expandOptions);
      if (!files.length) {
        const mine = skipped.slice(before);
        throw new UsageError(mine.length
          ? `Folder ${arg} has no model to process; skipped:\n${mine.map((s) => `  ${s.path}: ${s.reason}`).join('\n')}`
          : `Folder ${arg} contains no .onnx file`, { skipped: mine });
      }
      for (const file of files) expanded.push(file);
    } else if (st.isFile()) {
      expanded.push({ file: arg, base: undefined });
    } else {
      notFiles.push(`${arg} is ${kindOf(st)}, not a model file`);
    }
  }
  if (notFiles.length) throw new UsageError(`${notFiles.join('; ')}. Give model files or folders; to read a model from a pipe, use '-' (stdin).`);
  const many = expanded.length > 1 || fromFolder;
  if (expanded.filter((e) => e.file === '-').length && many) throw new UsageError("'-' (stdin) works only with a single model");
  const job = (e: Found, output: string | undefined): Job => ({
    input: e.file, output: e.planError ? undefined : output, ...(e.note ? { note: e.note } : {}), ...(e.planError ? { planError: e.planError } : {}),
    ...(e.companions ? { companions: e.companions } : {}),
  });

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
  for (const j of jobs) refuseCompanionDestinations(j);
  return { jobs, skipped };
}

/** Where `job` copies its artifacts folder's other files: the output's folder, or undefined when nothing is copied. */
export function companionFolder(job: Job): string | undefined {
  if (!job.companions?.length || job.planError || job.output === undefined || job.output === '-' || job.output === job.input) return undefined;
  return path.dirname(job.output);
}

/**
 * An artifacts folder's files are copied only where nothing is in the way: a destination that is
 * a symbolic link or not a regular file, a file of another size, or a link or file among the
 * folders on the way (below the output's folder) fails the job before anything is written. A
 * file of the same size is compared byte for byte when copied (and left as it is when the same).
 */
function refuseCompanionDestinations(job: Job): void {
  const outDir = companionFolder(job);
  if (outDir === undefined) return;
  const problems: string[] = [];
  let writeProblem = false;
  const seenFolders = new Set<string>();
  for (const c of job.companions!) {
    const parts = c.rel.split('/');
    for (let i = 1; i < parts.length; i++) {
      const folder = path.join(outDir, ...parts.slice(0, i));
      if (seenFolders.has(folder)) continue;
      seenFolders.add(folder);
      const st = lstatOrUndefined(folder);
      if (st?.isSymbolicLink()) problems.push(`${folder} is a symbolic link; files of the folder are copied only into real folders`);
      else if (st && !st.isDirectory()) { problems.push(`${folder} is ${kindOf(st)}, where the folder's subfolder ${parts.slice(0, i).join('/')} goes`); writeProblem = true; }
    }
    const dest = path.join(outDir, ...parts);
    const st = lstatOrUndefined(dest);
    if (!st) continue;
    if (st.isSymbolicLink()) problems.push(`${dest} is a symbolic link; files of the folder are copied only as regular files`);
    else if (!st.isFile()) problems.push(`${dest} is ${kindOf(st)}`);
    else if (BigInt(st.size) !== c.size) problems.push(`${dest} is a different file (${st.size} bytes; ${c.from} has ${c.size})`);
  }
  if (!problems.length) return;
  const message = `Refusing to copy the training artifacts folder ${path.dirname(job.input)} to ${outDir}: ${problems.length === 1 ? 'a destination is' : `${problems.length} destinations are`} in the way, and files are never copied over different ones:\n` +
    `${problems.map((p) => `  ${p}`).join('\n')}\nNothing of the folder was written. Choose another output folder, or remove those entries.`;
  job.planError = writeProblem ? new OutputWriteError(message) : new RefusedError(message);
  job.output = undefined;
}

/** The real path of `p` with links resolved, or its absolute path when it cannot be resolved. */
export function realOrResolved(p: string): string {
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
 * The files an artifacts folder copies are writes too, and their sources are reads.
 */
function refuseCollisions(jobs: Job[]): void {
  interface Write { job: Job; path: string; key: string; what: string; source: string }
  const writes: Write[] = [];
  for (const j of jobs) {
    if (j.planError || j.output === undefined || j.output === '-') continue;
    writes.push({ job: j, path: j.output, key: entryKey(j.output), what: `output of ${j.input}`, source: j.input });
    const outDir = companionFolder(j);
    if (outDir === undefined) continue;
    for (const c of j.companions!) {
      const dest = path.join(outDir, ...c.rel.split('/'));
      writes.push({ job: j, path: dest, key: entryKey(dest), what: `copy of ${c.from}`, source: c.from });
    }
  }
  if (!writes.length) return;
  const problems = new Set<string>();
  const byDest = new Map<string, Write[]>();
  for (const w of writes) byDest.set(w.key, [...(byDest.get(w.key) ?? []), w]);
  for (const same of byDest.values()) {
    if (same.length < 2) continue;
    problems.add(same.every((w) => w.what.startsWith('output of'))
      ? `${same[0]!.path} would be written by ${same.length} models: ${same.map((w) => w.job.input).join(', ')}`
      : `${same[0]!.path} would be written ${same.length} times: ${same.map((w) => w.what).join(', ')}`);
  }
  const reads = new Map<string, Array<{ job: Job; file: string; kind: 'model' | 'data' | 'folder' }>>();
  const read = (file: string, job: Job, kind: 'model' | 'data' | 'folder') => {
    for (const key of new Set([entryKey(file), realOrResolved(file)])) reads.set(key, [...(reads.get(key) ?? []), { job, file, kind }]);
  };
  const destKeys = writes.map((w) => w.key);
  for (const j of jobs) {
    if (j.planError || j.input === '-') continue;
    read(j.input, j, 'model');
    for (const c of j.companions ?? []) read(c.from, j, 'folder');
    const folder = realOrResolved(path.dirname(path.resolve(j.input)));
    if (destKeys.some((d) => isInside(d, folder))) for (const file of externalDataPaths(j, jobs.length === 1)) read(file, j, 'data');
  }
  for (const w of writes) {
    for (const r of reads.get(w.key) ?? []) {
      // A write onto its own source: the model is left to the save (--in-place, or refused with exit 5); a copy finds the same file.
      if (r.job === w.job && r.kind !== 'data' && r.file === w.source) continue;
      problems.add(r.kind === 'model'
        ? `${w.path} (${w.what}) would replace ${r.job.input}, an input of this run`
        : r.kind === 'folder'
          ? `${w.path} (${w.what}) would replace ${r.file}, a file of the training artifacts folder of ${r.job.input}`
          : `${w.path} (${w.what}) would replace ${r.file}, external data of ${r.job.input}`);
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
