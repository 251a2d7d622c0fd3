/** The CLI's commands as functions that return one result object; main.ts prints it and exits. */
import { closeSync, constants, fstatSync, mkdirSync, openSync, realpathSync, rmdirSync, unlinkSync } from 'node:fs';
import path from 'node:path';
import { dataTypeName } from '../src/graph/dtype.js';
import { OnnxNeftuneError } from '../src/graph/errors.js';
import type { Model } from '../src/graph/ir.js';
import {
  TOOL_VERSION, findEmbeddings, isPatched, neftunePass, readPatchRecord, runPass,
  type EmbeddingCandidate, type GraphPass, type NeftuneOptions, type PassResult, type PatchedSite, type PatchRecord, type PatchResult,
} from '../src/passes/index.js';
import {
  RefusedError, FileAccessError, InputChangedError, descriptorPath, encodeCheckedBytes, loadModelBytes, readModelFile, readModelStream, sameContent, saveModelFile, type LoadedModel,
} from '../src/io/index.js';
import { copyFileAtomic, makeFolders, writeError } from '../src/io/atomic-write.js';
import { EXIT, exitCodeFor, isErrorCode, type ExitCode } from './exit-codes.js';
import { VerifyFailedError, type VerifyReport } from '../src/verify/verify.js';
import type { ExecutionProvider } from '../src/runtime/node.js';
import { OutputWriteError, UsageError, describeErrno, isErrno, type SkippedEntry } from './errors.js';
import { checkModelPath, companionFolder, entryKey, planJobs, type FolderFile, type Job, type Plan } from './inputs.js';
import { checkVerifyBudget } from './verify-budget.js';
import { progressReporter } from './output.js';
import { cliMessage } from './flags.js';
import { lstatOrUndefined } from '../src/io/fs-facts.js';
import { UnsupportedGradientError } from '../src/training/errors.js';
import type { StepSummary } from './step.js';

export type FileStatus = 'inspected' | 'patched' | 'stripped' | 'unchanged' | 'dry-run' | 'verified' | 'built' | 'failed';

export interface FileResult {
  input: string;
  output: string | null;
  status: FileStatus;
  message: string;
  note: string | null;
  error: { code: string; exitCode: number; message: string } | null;
  warnings: string[];
  sites: PatchedSite[];
  model: ModelSummary | null;
  /** verify: one report per execution provider. */
  verify?: VerifyReport[];
  /**
   * patch and strip: files of a training-artifacts folder the output's folder now holds as copies of
   * the input folder's (paths inside the folder, POSIX separators; a dry run lists what it would
   * copy). Empty for other models, with --in-place, and when the file failed: nothing is copied then.
   */
  copied?: string[];
  /** step: the training-step graph written (null when the file failed). */
  step?: StepSummary | null;
  /** step: every node on a parameter-to-loss path without a usable gradient rule (when that is why it failed). */
  unsupportedOps?: Array<{ op: string; node: string; why: string }>;
  /** patch and strip to another folder: the external data copied beside the output (lengths, and disk space taken). */
  dataCopied?: { files: number; bytes: number; allocated: number };
}

export interface ModelSummary {
  irVersion: number;
  opsets: Array<{ domain: string; version: number }>;
  producer: string;
  bytes: number;
  nodes: number;
  patched: boolean;
  patch: PatchRecord | null;
  externalData: Array<{ location: string; present: boolean; bytes: number | null; tensors: number }>;
  embeddings: ReportJson;
}

export interface ReportJson {
  candidates: CandidateJson[];
  defaultTarget: string[];
  targetReason: string;
  ambiguous: boolean;
  /** Lookup-like nodes that are not candidates, and why. */
  nearMisses: Array<{ node: string; graphPath: string[]; reason: string }>;
}

export interface CandidateJson {
  node: string;
  graphPath: string[];
  kind: string;
  table: { name: string; storage: string; outerScope: boolean; via: string[]; rows: number | null; dim: number | null; dtype: string | null };
  /** derivation: how the ids were computed from graph inputs (e.g. "input_ids * attention_mask"), null for plain ids. */
  indices: { source: string; input: string | null; via: string[]; derivation: string | null };
  outputType: string | null;
  role: string;
  reasons: string[];
  patchable: boolean;
  notPatchableReason: string | null;
  /** What is malformed where the lookup reads the model (table dims or payload, index type, output). */
  invalidReason: string | null;
  scale: { node: string | null; factor: number | null; invalidReason: string | null } | null;
  defaultTarget: boolean;
}

export interface CliResult {
  tool: 'onnx-neftune';
  version: string;
  command: string;
  ok: boolean;
  exitCode: number;
  files: FileResult[];
  summary: { total: number; succeeded: number; failed: number };
  /** Set when the invocation itself was wrong (no file was processed). */
  error?: { code: string; exitCode: number; message: string };
  /** patch and strip: entries of batch folders that were not processed (symbolic links, FIFOs, ...), and why. */
  skipped?: SkippedEntry[];
}

export function candidateJson(c: EmbeddingCandidate, defaultTargets: ReadonlySet<EmbeddingCandidate>): CandidateJson {
  return {
    node: c.nodeLabel, graphPath: c.graphPath, kind: c.kind,
    table: {
      name: c.table.name, storage: c.table.storage, outerScope: c.table.outerScope, via: c.table.via,
      rows: c.table.rows ?? null, dim: c.table.dim ?? null, dtype: c.table.dataType !== undefined ? dataTypeName(c.table.dataType) : null,
    },
    indices: { source: c.indices.source, input: c.indices.input ?? null, via: c.indices.via, derivation: c.indices.derivation ?? null },
    outputType: c.outputType !== undefined ? dataTypeName(c.outputType) : null,
    role: c.role, reasons: c.reasons, patchable: c.patchable, notPatchableReason: c.notPatchableReason ?? null,
    invalidReason: c.invalidReason ?? null,
    scale: c.scale ? { node: c.scale.node.name ?? null, factor: c.scale.factor ?? null, invalidReason: c.scale.invalidReason ?? null } : null,
    defaultTarget: defaultTargets.has(c),
  };
}

export function summarize(loaded: LoadedModel): ModelSummary {
  const model: Model = loaded.model;
  const report = findEmbeddings(model);
  const defaultTargets = new Set(report.defaultTarget);
  let nodes = 0;
  for (const g of model.allGraphs()) nodes += g.nodeCount;
  return {
    irVersion: model.irVersion,
    opsets: [...model.opsetImports],
    producer: [model.producerName, model.proto.producer_version].filter(Boolean).join(' '),
    bytes: loaded.size,
    nodes,
    patched: isPatched(model),
    patch: readPatchRecord(model) ?? null,
    externalData: loaded.externalData.map((f) => ({ location: f.location, present: f.present, bytes: f.size ?? null, tensors: f.tensors.length })),
    embeddings: {
      candidates: report.candidates.map((c) => candidateJson(c, defaultTargets)),
      defaultTarget: report.defaultTarget.map((c) => c.nodeLabel),
      targetReason: report.targetReason,
      ambiguous: report.ambiguous,
      nearMisses: report.nearMisses,
    },
  };
}

/** stdin is checked field by field as it arrives: garbage fails at its first impossible byte, not after reading it all. */
async function readStdin(): Promise<Uint8Array> {
  try {
    return await readModelStream(process.stdin);
  } catch (error) {
    if (error instanceof OnnxNeftuneError) throw error;
    throw new FileAccessError(`Cannot read the model from stdin: ${describeErrno(error)}`, { cause: error });
  }
}

async function load(input: string): Promise<LoadedModel> {
  if (input === '-') return loadModelBytes(await readStdin(), undefined);
  return readModelFile(input);
}

/** The exit code of a typed error; one whose code the CLI does not know still counts as bad input, not a crash. */
export function exitCodeOf(error: OnnxNeftuneError): ExitCode {
  return isErrorCode(error.code) ? exitCodeFor(error.code) : EXIT.INVALID_MODEL;
}

/** A failed file: typed errors keep their code; anything else is a bug (INTERNAL, exit 1). */
function failure(job: Job, error: unknown): FileResult {
  const known = error instanceof OnnxNeftuneError;
  return {
    input: job.input, output: job.output ?? null, status: 'failed', note: job.note ?? null,
    message: known ? cliMessage(error) : `Unexpected error: ${(error as Error)?.stack ?? String(error)}`,
    error: known ? { code: error.code, exitCode: exitCodeOf(error), message: cliMessage(error) } : { code: 'INTERNAL', exitCode: EXIT.INTERNAL, message: String(error) },
    warnings: [], sites: [], model: null,
    ...(error instanceof UnsupportedGradientError ? { unsupportedOps: [...error.ops] } : {}),
  };
}

function finish(command: string, files: FileResult[], skipped?: SkippedEntry[]): CliResult {
  const failed = files.filter((f) => f.status === 'failed');
  const codes = new Set(failed.map((f) => f.error!.exitCode));
  const exitCode = failed.length === 0 ? EXIT.OK : codes.size === 1 ? [...codes][0]! : EXIT.INTERNAL;
  return {
    tool: 'onnx-neftune', version: TOOL_VERSION, command, ok: failed.length === 0, exitCode, files,
    summary: { total: files.length, succeeded: files.length - failed.length, failed: failed.length },
    ...(skipped ? { skipped } : {}),
  };
}

export function usageFailure(command: string, message: string): CliResult {
  return invocationFailure(command, new UsageError(message));
}

/** The invocation itself failed before any file was processed: no files, a top-level error. */
export function invocationFailure(command: string, error: OnnxNeftuneError): CliResult {
  const exitCode = exitCodeOf(error);
  const skipped = error instanceof UsageError && error.skipped.length ? { skipped: error.skipped } : {};
  return {
    tool: 'onnx-neftune', version: TOOL_VERSION, command, ok: false, exitCode,
    files: [], summary: { total: 0, succeeded: 0, failed: 0 },
    error: { code: error.code, exitCode, message: cliMessage(error) },
    ...skipped,
  };
}

export async function inspectCommand(input: string): Promise<CliResult> {
  const job: Job = { input, output: undefined };
  try {
    checkModelPath(input, 'inspect');
    const loaded = await load(input);
    let model: ModelSummary;
    try { model = summarize(loaded); } finally { loaded.close(); }
    return finish('inspect', [{
      input, output: null, status: 'inspected', note: null, error: null, warnings: [], sites: [], model,
      message: model.patched ? 'patched' : 'not patched',
    }]);
  } catch (error) {
    if (error instanceof UsageError) return invocationFailure('inspect', error);
    return finish('inspect', [failure(job, error)]);
  }
}

export interface FileCommandOptions {
  output?: string;
  inPlace?: boolean;
  dryRun?: boolean;
  /** Writes model bytes to stdout (for -o -); rejects when the write fails. */
  writeStdout: (bytes: Uint8Array) => Promise<void>;
}

/** What a file's line says about a pass's result. */
export interface PassOutcome { message: string; warnings?: string[]; sites?: PatchedSite[] }

/**
 * Runs `pass` on every input (files, folders, stdin) and writes the outputs: the helper behind
 * patch, usable for any GraphPass. The pass runs as in the library (`runPass`), so the CLI and a
 * library caller with the same options write the same bytes.
 */
export function passCommand<Options extends object, Normalized, Result extends PassResult>(
  command: string, pass: GraphPass<Options, Normalized, Result, PassResult>, inputs: string[], passOptions: Options,
  options: FileCommandOptions, describe: (result: Result, job: Job) => PassOutcome,
): Promise<CliResult> {
  return runFileCommand(command, inputs, options, (loaded, job) => {
    const result = runPass(pass, loaded.model, passOptions);
    return outcomeOf(result, describe(result, job), job, options, 'patched');
  });
}

/** Runs `pass`'s inverse (strip) on every input, as `passCommand` runs the pass. */
export function inverseCommand<Options extends object, Normalized, Result extends PassResult, Inverse extends PassResult>(
  command: string, pass: GraphPass<Options, Normalized, Result, Inverse>, inputs: string[],
  options: FileCommandOptions, describe: (result: Inverse, job: Job) => PassOutcome,
): Promise<CliResult> {
  const inverse = pass.inverse;
  if (!inverse) throw new Error(`pass ${pass.name} has no inverse`);
  return runFileCommand(command, inputs, options, (loaded, job) => {
    const result = inverse.call(pass, loaded.model);
    return outcomeOf(result, describe(result, job), job, options, 'stripped');
  });
}

function outcomeOf(result: PassResult, described: PassOutcome, job: Job, options: FileCommandOptions, done: FileStatus): Outcome {
  return {
    status: result.modified ? (options.dryRun ? 'dry-run' : done) : 'unchanged',
    warnings: described.warnings ?? [], sites: described.sites ?? [], message: described.message,
    // A model the pass left alone is not rewritten in place; with -o elsewhere or to stdout it is still written so pipelines get their file.
    write: !options.dryRun && (result.modified || job.output !== job.input || job.output === '-'),
  };
}

function describePatch(result: PatchResult, job: Job, dryRun: boolean): PassOutcome {
  const sites = result.record.sites;
  const where = sites.map((s) => `${s.lookup} (table ${s.table}, ${s.role})`).join(', ');
  const { alpha, alphaInput, mode } = result.record.options;
  return {
    warnings: result.warnings, sites,
    message: `${dryRun ? 'would patch' : 'patched'} ${sites.length} site${sites.length === 1 ? '' : 's'}: ${where}; alpha ${alphaInput ? `from input ${typeof alphaInput === 'string' ? alphaInput : 'neftune_alpha'}` : alpha}, mode ${mode}${job.note ? `. ${job.note}` : ''}`,
  };
}

export function patchCommand(inputs: string[], patch: NeftuneOptions, options: FileCommandOptions): Promise<CliResult> {
  return passCommand('patch', neftunePass, inputs, patch, options, (result, job) => describePatch(result, job, !!options.dryRun));
}

export function stripCommand(inputs: string[], options: FileCommandOptions): Promise<CliResult> {
  return inverseCommand('strip', neftunePass, inputs, options, (result, job) => ({ message: `${result.message}${job.note ? ` ${job.note}` : ''}` }));
}

export interface Outcome { status: FileStatus; warnings: string[]; sites: PatchedSite[]; message: string; write: boolean; step?: StepSummary }

export async function runFileCommand(command: string, inputs: string[], options: FileCommandOptions, work: (loaded: LoadedModel, job: Job) => Outcome): Promise<CliResult> {
  let plan: Plan;
  try {
    plan = planJobs(inputs, { ...options, needsOutput: true });
  } catch (error) {
    if (error instanceof OnnxNeftuneError) return invocationFailure(command, error);
    throw error;
  }
  const files: FileResult[] = [];
  // Data files (and artifacts-folder files) this run copied beside its outputs: a later output must not replace one.
  const copied = new Set<string>();
  for (const job of plan.jobs) {
    let loaded: LoadedModel | undefined;
    try {
      if (job.planError) throw job.planError;
      loaded = await loadPlanned(job);
      const outcome = work(loaded, job);
      let folderCopies: string[] = options.dryRun ? (job.companions ?? []).map((c) => c.rel).sort() : [];
      let dataCopied: FileResult['dataCopied'];
      if (outcome.write && job.output !== undefined) {
        if (job.output === '-') {
          const bytes = encodeCheckedBytes(loaded.model);
          try {
            await options.writeStdout(bytes);
          } catch (error) {
            throw new OutputWriteError(`Cannot write the model to stdout: ${describeErrno(error)}`, { cause: error });
          }
        } else {
          if (copied.has(entryKey(job.output))) throw new RefusedError(`Refusing to write ${job.output}: this run copied another model's external data or artifacts-folder file there.`);
          // The folder's other files first, the training model last: when its save fails, the copies are removed again.
          const outDir = companionFolder(job);
          const folder = outDir === undefined ? undefined : copyFolderFiles(job, outDir, loaded);
          const progress = progressReporter(`writing ${path.basename(job.output)}`, loaded.size);
          const saved = await saveModelFile(loaded, job.output, { inPlace: !!options.inPlace, ...(progress ? { onProgress: (w: number) => progress(w) } : {}) })
            .catch((error: unknown) => {
              folder?.undo();
              throw isErrno(error) ? new OutputWriteError(`Cannot write ${job.output}: ${describeErrno(error)}`, { cause: error }) : error;
            });
          for (const file of saved.copiedData) copied.add(entryKey(file));
          if (saved.copiedData.length) dataCopied = { files: saved.copiedData.length, bytes: saved.copiedDataBytes, allocated: saved.copiedDataAllocated };
          if (folder && outDir !== undefined) {
            for (const file of folder.made) copied.add(entryKey(file));
            // The model's own external data was carried by the save: it is part of the folder too.
            const root = realpathSync(outDir);
            const carried = [...saved.copiedData, ...saved.reusedData].map((f) => path.relative(root, f).split(path.sep).join('/'));
            folderCopies = [...new Set([...folder.present, ...carried])].sort();
          }
        }
      }
      const copyNote = !job.companions ? '' : folderCopies.length
        ? `; ${options.dryRun ? 'would copy' : 'copied'} ${folderCopies.length} file${folderCopies.length === 1 ? '' : 's'} of the folder: ${listed(folderCopies)}`
        : job.companions.length || options.inPlace ? '' : '; the folder has no other files';
      files.push({
        input: job.input, output: outcome.write ? job.output ?? null : null, status: outcome.status, note: job.note ?? null,
        message: outcome.message + copyNote + (dataCopied ? `; copied ${dataCopied.files} external data file${dataCopied.files === 1 ? '' : 's'}: ${dataCopied.bytes} bytes, ${dataCopied.allocated} on disk` : ''),
        error: null, warnings: outcome.warnings, sites: outcome.sites, model: null, copied: folderCopies, ...(dataCopied ? { dataCopied } : {}),
        ...(outcome.step ? { step: outcome.step } : {}),
      });
    } catch (error) {
      files.push({ ...failure(job, error), copied: [] });
    } finally {
      loaded?.close(); // the model file was held open from load to save
    }
  }
  return finish(command, files, plan.skipped);
}

/** The first names of a long list, and how many more. */
function listed(names: string[], max = 10): string {
  return names.length <= max ? names.join(', ') : `${names.slice(0, max).join(', ')} and ${names.length - max} more`;
}

interface FolderCopied {
  /** Paths (inside the folder) the output's folder now holds: copied, or already there with the same bytes. */
  present: string[];
  /** Files this call created. */
  made: string[];
  /** Removes what this call created (files, then folders left empty), never what was there before. */
  undo(): void;
}

const OPEN_SOURCE = constants.O_RDONLY | (constants.O_NOFOLLOW ?? 0) | (constants.O_NONBLOCK ?? 0);

/**
 * Copies the artifacts folder's other files into `outDir` under the same paths (copy-on-write
 * clones where the file system offers them, each through a temp file renamed into place). Each
 * source is opened without following links and must be the file seen while planning; each
 * destination must be absent or hold the same bytes, with only real folders on the way. Files
 * the model reads as external data are left to its save. On any failure, what was copied is removed.
 */
function copyFolderFiles(job: Job, outDir: string, loaded: LoadedModel): FolderCopied {
  const present: string[] = [];
  const made: string[] = [];
  const createdFolders: string[] = [];
  const undo = () => {
    for (const file of made.splice(0).reverse()) { try { unlinkSync(file); } catch { /* already gone */ } }
    for (const dir of createdFolders.splice(0).reverse()) { try { rmdirSync(dir); } catch { /* not empty: keep */ } }
  };
  const isModelData = (c: FolderFile) => loaded.externalData.some((f) => f.present && f.dev === c.dev && f.ino === c.ino);
  try {
    createdFolders.push(...makeFolders(outDir));
    for (const c of job.companions ?? []) {
      if (isModelData(c)) continue;
      const parts = c.rel.split('/');
      let dir = outDir;
      for (const part of parts.slice(0, -1)) {
        dir = path.join(dir, part);
        const st = lstatOrUndefined(dir);
        if (!st) { mkdirSync(dir); createdFolders.push(dir); continue; }
        if (!st.isDirectory()) throw new RefusedError(`Refusing to copy ${c.from}: ${dir} is ${st.isSymbolicLink() ? 'a symbolic link' : 'not a folder'} (it changed since the run was planned); files of the folder are copied only into real folders. Nothing of the folder was kept.`);
      }
      const dest = path.join(dir, parts.at(-1)!);
      copyOne(c, dest, job, made, present);
    }
    return { present, made: [...made], undo };
  } catch (error) {
    undo();
    throw writeError(`copy the training artifacts folder of ${job.input} to ${outDir}`, error);
  }
}

function copyOne(c: FolderFile, dest: string, job: Job, made: string[], present: string[]): void {
  let fd: number;
  try { fd = openSync(c.from, OPEN_SOURCE); } catch (error) {
    throw new FileAccessError(`Cannot copy ${c.from} (training artifacts folder of ${job.input}): ${describeErrno(error)}. Nothing of the folder was kept.`, { cause: error });
  }
  try {
    const st = fstatSync(fd, { bigint: true });
    if (!st.isFile() || st.dev !== c.dev || st.ino !== c.ino) {
      throw new InputChangedError(`${c.from} was replaced since the run was planned (training artifacts folder of ${job.input}); nothing of the folder was kept. Run again.`);
    }
    const source = descriptorPath(fd, c.from);
    const existing = lstatOrUndefined(dest);
    if (existing) {
      if (existing.isFile() && sameContent(source, dest)) { present.push(c.rel); return; }
      throw new RefusedError(`Refusing to overwrite ${dest} with a copy of ${c.from}: a different ${existing.isSymbolicLink() ? 'entry (a symbolic link)' : 'file'} is already there. Nothing of the folder was kept; choose another output folder, or remove it.`);
    }
    copyFileAtomic(source, dest, `copy ${c.from} to ${dest}`, fd);
    made.push(dest);
    present.push(c.rel);
  } finally {
    closeSync(fd);
  }
}

/** The model planning already loaded (or failed to), else a fresh load. */
async function loadPlanned(job: Job): Promise<LoadedModel> {
  const pre = job.preloaded;
  delete job.preloaded;
  if (!pre) return await load(job.input);
  if ('error' in pre) throw pre.error;
  return pre.loaded;
}

export interface VerifyCommandOptions { eps: ExecutionProvider[]; batch?: number; seq?: number; runs?: number }

/** Loads ONNX Runtime only here: the other commands never pay for it. */
export async function verifyCommand(input: string, options: VerifyCommandOptions): Promise<CliResult> {
  const job: Job = { input, output: undefined };
  try {
    checkModelPath(input, 'verify');
    const loaded = await load(input);
    const reports: VerifyReport[] = [];
    try {
      checkVerifyBudget(loaded, options.batch ?? 2, options.seq ?? 16, options.runs ?? 3);
      const { loadRuntime, verifyLoadedModel } = await import('../src/runtime/node.js');
      for (const ep of options.eps) {
        const runtime = await loadRuntime(ep);
        reports.push(await verifyLoadedModel(loaded, runtime, {
          ...(options.batch !== undefined ? { batch: options.batch } : {}),
          ...(options.seq !== undefined ? { seq: options.seq } : {}),
          ...(options.runs !== undefined ? { runs: options.runs } : {}),
        }));
      }
    } finally {
      loaded.close();
    }
    const ok = reports.every((r) => r.ok);
    const file: FileResult = {
      input, output: null, status: ok ? 'verified' : 'failed', note: null, warnings: [], sites: [], model: null, verify: reports,
      message: reports.map((r) => `${r.ep}: ${r.message}`).join(' | '),
      error: null,
    };
    if (!ok) {
      const failed = new VerifyFailedError(reports.filter((r) => !r.ok).map((r) => `${r.ep}: ${r.message}`).join(' | '));
      file.error = { code: failed.code, exitCode: exitCodeOf(failed), message: failed.message };
    }
    return finish('verify', [file]);
  } catch (error) {
    if (error instanceof UsageError) return invocationFailure('verify', error);
    return finish('verify', [failure(job, error)]);
  }
}
