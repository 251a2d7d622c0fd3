/**
 * `neftune train`: NEFTune fine-tuning of a forward model on ONNX Runtime. Loads the model (external
 * data read in), reads the data, patches NEFTune with an alpha input (so the alpha schedule is fed
 * per step), builds the training step, runs the Trainer (one session, keyed noise), checkpoints,
 * and exports the forward model with the trained weights and no noise. Every input is checked
 * before the first step; nothing is written when a check fails.
 */
import { createHash } from 'node:crypto';
import { closeSync, existsSync, openSync, statSync, writeSync, type Stats } from 'node:fs';
import { isatty } from 'node:tty';
import path from 'node:path';
import type { Model } from '../src/graph/ir.js';
import { encodeModel } from '../src/graph/codec.js';
import { applyNeftune, findEmbeddings } from '../src/passes/index.js';
import { buildTrainingStep, type LossChoice } from '../src/training/step.js';
import { Batcher, TrainingDataError, type BatcherState, type TokenDataset } from '../src/training/data.js';
import { IGNORE_INDEX, type TokenBatch } from '../src/training/batch.js';
import { BATCH_INPUTS, Trainer, sequenceLimit, type StepEvent, type TrainerOrt, type TrainerTensor } from '../src/training/trainer.js';
import { CheckpointMismatchError } from '../src/training/checkpoint.js';
import { exportFineTuned } from '../src/training/export.js';
import { lossPlotSvg, type LossSeries } from '../src/training/plot.js';
import type { AlphaSchedule, LearningRateSchedule } from '../src/training/schedules.js';
import { readModelFile, type LoadedModel } from '../src/io/files.js';
import { RefusedError } from '../src/io/errors.js';
import { writeFileAtomic } from '../src/io/atomic-write.js';
import { firstNonFinite, loadCheckpoint, saveCheckpoint } from '../src/io/checkpoint-files.js';
import { OnnxNeftuneError } from '../src/graph/errors.js';
import type { Tensor } from '../src/graph/tensor.js';
import { readAlpacaFile, readTokenJsonlFile, readTokenizerFile } from '../src/io/data-files.js';
import { fineTunedDataPaths, saveFineTuned, withExternalDataRead } from '../src/io/finetuned-files.js';
import type { Runtime } from '../src/runtime/node.js';
import { UsageError } from './errors.js';
import { exitCodeOf } from './commands.js';
import { cliMessage } from './flags.js';
import { entryKey, realOrResolved } from './inputs.js';
import { DEFAULTS, DEFAULT_MAX_LEN, type Mode, type Optimizer, type Schedule, type TrainFlags } from './train-options.js';

/** The loss or the parameters became NaN or infinite: the run stops and nothing is exported. */
export class TrainingDivergedError extends OnnxNeftuneError {
  constructor(message: string, readonly step: number) { super('TRAINING_DIVERGED', message); }
}

const DIVERGED_ADVICE = 'Nothing was exported; checkpoints written before it are kept. Lower --lr (or add --warmup), then train again or resume from an earlier checkpoint.';

/** Throws TrainingDivergedError when a tensor holds NaN or infinity after update `step`. */
function checkFinite(tensors: readonly Tensor[], step: number, label: string): void {
  for (const t of tensors) {
    const at = firstNonFinite(t);
    if (at >= 0) throw new TrainingDivergedError(`Training diverged${label}: after update ${step}, ${t.name} holds a NaN or infinite value (element ${at}). ${DIVERGED_ADVICE}`, step);
  }
}

const positiveInt = (flag: string, value: number | undefined, min = 1): void => {
  if (value !== undefined && (!Number.isSafeInteger(value) || value < min)) throw new UsageError(`--${flag} must be an integer >= ${min}, got ${value}`);
};

function checkFlags(f: TrainFlags): void {
  for (const [flag, value, min] of [['steps', f.steps, 1], ['epochs', f.epochs, 1], ['batch', f.batch, 1], ['grad-accum', f.gradAccum, 1], ['max-len', f.maxLen, 2],
    ['warmup', f.warmup, 0], ['seed', f.seed, 0], ['checkpoint-every', f.checkpointEvery, 1], ['eval-every', f.evalEvery, 1]] as const) positiveInt(flag, value, min);
  if (f.steps !== undefined && f.epochs !== undefined) throw new UsageError('Give --steps or --epochs, not both');
  if (f.lr !== undefined && !(Number.isFinite(f.lr) && f.lr >= 0)) throw new UsageError(`--lr must be a finite number >= 0, got ${f.lr}`);
  if (f.alpha !== undefined && !(Number.isFinite(f.alpha) && f.alpha >= 0)) throw new UsageError(`--alpha must be a finite number >= 0, got ${f.alpha}`);
  if (f.neftune === false && (f.alpha !== undefined || f.alphaSchedule !== undefined || f.compare)) {
    throw new UsageError(`--no-neftune cannot be combined with ${f.compare ? '--compare (it runs both)' : f.alpha !== undefined ? '--alpha' : '--alpha-schedule'}`);
  }
  if (f.checkpointEvery !== undefined && f.checkpointDir === undefined) throw new UsageError('--checkpoint-every needs --checkpoint-dir');
  if (f.compare && (f.resume !== undefined || f.checkpointDir !== undefined)) throw new UsageError('--compare runs two trainings; it cannot be combined with --resume or --checkpoint-dir');
  if (f.evalEvery !== undefined && f.evalData === undefined) throw new UsageError('--eval-every needs --eval-data');
  if (f.alphaSchedule !== undefined) parseAlphaSchedule(f.alphaSchedule, 0, 1);
}

interface NamedPath { path: string; what: string }

const statOrUndefined = (p: string): Stats | undefined => { try { return statSync(p); } catch { return undefined; } };
/** The keys a write to `p` hits: the directory entry it replaces, and the file a link there points to. */
const keysOf = (p: string): string[] => [entryKey(p), realOrResolved(p)];
const isWithin = (file: string, dir: string): boolean => file === dir || file.startsWith(dir.endsWith(path.sep) ? dir : dir + path.sep);
/** A checkpoint folder's own entries: LATEST and the step folders (a save replaces and rotates them). */
const CHECKPOINT_ENTRY = /^(LATEST|\.?step-\d)/;
function inCheckpointFolder(file: string, dir: string, wholeFolder: boolean): boolean {
  if (!isWithin(file, dir)) return false;
  const first = path.relative(dir, file).split(path.sep)[0]!;
  return wholeFolder || first === '' || CHECKPOINT_ENTRY.test(first);
}

/**
 * Refuses, before anything runs, a run that would write over a file it reads: every output (the
 * model, its trained data files, --log, --plot, the checkpoint folder's entries) against every
 * input (the model, its data files, --data, --eval-data, the tokenizer and its config, the
 * checkpoint resumed from); also outputs that are folders or stdout, outputs that collide, and a
 * --checkpoint-dir that is not a folder. Checkpointing into the folder resumed from is allowed:
 * the checkpoint is read whole before the first step.
 */
function checkPaths(flags: TrainFlags, input: string, loaded: LoadedModel): void {
  for (const [flag, value] of [['-o', flags.output], ['--log', flags.log], ['--plot', flags.plot], ['--checkpoint-dir', flags.checkpointDir]] as const) {
    if (value === '-') throw new UsageError(`${flag} - (stdout) is not supported by train: stdout carries the --json lines and the model needs a file. Give a file name.`);
  }
  const outputs: NamedPath[] = [
    { path: flags.output, what: '-o (the fine-tuned model)' },
    ...fineTunedDataPaths(loaded, flags.output).map((p) => ({ path: p, what: 'the fine-tuned model\'s data file' })),
    ...(flags.log !== undefined ? [{ path: flags.log, what: '--log' }] : []),
    ...(flags.plot !== undefined ? [{ path: flags.plot, what: '--plot' }] : []),
  ];
  for (const o of outputs) if (statOrUndefined(o.path)?.isDirectory()) throw new UsageError(`${o.what} ${o.path} is a folder; give a file name.`);
  if (flags.checkpointDir !== undefined) {
    // The nearest existing path on the way must be a folder, or the first save fails (ENOTDIR) after training.
    for (let d = path.resolve(flags.checkpointDir); ; d = path.dirname(d)) {
      const st = statOrUndefined(d);
      if (st && !st.isDirectory()) throw new UsageError(`--checkpoint-dir ${flags.checkpointDir}: ${d} is a file, not a folder. Name a folder (it is made when missing).`);
      if (st || path.dirname(d) === d) break;
    }
  }
  const inputs: NamedPath[] = [
    { path: input, what: 'the model' },
    ...loaded.externalData.map((f) => ({ path: f.path, what: `external data of the model (${f.location})` })),
    { path: flags.data, what: '--data' },
    ...(flags.evalData !== undefined ? [{ path: flags.evalData, what: '--eval-data' }] : []),
    ...(flags.tokenizer !== undefined ? [{ path: flags.tokenizer, what: '--tokenizer' }] : []),
  ];
  const config = flags.tokenizer !== undefined ? path.join(path.dirname(flags.tokenizer), 'tokenizer_config.json') : undefined;
  if (config && existsSync(config)) inputs.push({ path: config, what: 'the tokenizer config read with --tokenizer' });
  const problems: string[] = [];
  outputs.forEach((o, i) => {
    const keys = keysOf(o.path);
    for (const other of outputs.slice(0, i)) {
      if (keysOf(other.path).some((k) => keys.includes(k))) throw new UsageError(`${o.what} and ${other.what} name the same file ${o.path}; give each output its own name.`);
    }
    for (const r of inputs) if (keysOf(r.path).some((k) => keys.includes(k))) problems.push(`${o.what} ${o.path} would replace ${r.what} ${r.path}`);
  });
  if (flags.resume !== undefined) {
    const dir = realOrResolved(flags.resume);
    const single = existsSync(path.join(dir, 'checkpoint.onnx'));
    for (const o of outputs) if (keysOf(o.path).some((k) => inCheckpointFolder(k, dir, single))) problems.push(`${o.what} ${o.path} would replace a file of the checkpoint --resume ${flags.resume}`);
  }
  if (flags.checkpointDir !== undefined) {
    const dir = realOrResolved(flags.checkpointDir);
    for (const x of [...inputs, ...outputs]) {
      if (keysOf(x.path).some((k) => inCheckpointFolder(k, dir, false))) problems.push(`--checkpoint-dir ${flags.checkpointDir} would replace ${x.what} ${x.path} (checkpoints write LATEST and step-N folders there)`);
    }
  }
  if (problems.length) {
    throw new RefusedError(`Refusing to train: ${problems.length === 1 ? 'an output collides' : `${problems.length} outputs collide`} with an input or another output, and inputs are never written:\n` +
      `${[...new Set(problems)].map((p) => `  ${p}`).join('\n')}\nNothing was written. Choose other output names.`);
  }
}

function parseAlphaSchedule(text: string, alpha: number, total: number): AlphaSchedule {
  if (text === 'constant') return { kind: 'constant', alpha };
  if (text === 'linear') return { kind: 'linear', alpha, totalSteps: total };
  const off = /^off-after:(\d+)$/.exec(text);
  if (off) return { kind: 'constant', alpha, offAfter: Number(off[1]) };
  throw new UsageError(`--alpha-schedule must be constant, linear or off-after:N, got "${text}"`);
}

/** Rows of the token-embedding table (the ids the data may use), else the logits' last dimension. */
function vocabularyOf(model: Model): number {
  const rows = findEmbeddings(model).defaultTarget[0]?.table.rows;
  if (rows !== undefined) return rows;
  const logits = model.graph.outputs.find((o) => o.name === 'logits') ?? model.graph.outputs[0];
  const last = logits?.shape?.at(-1);
  if (typeof last === 'number') return last;
  throw new UsageError('Cannot tell the model\'s vocabulary size: no token-embedding table was found and the logits\' last dimension is not fixed.');
}

async function readDataset(file: string, tokenizerFile: string | undefined, vocabSize: number, maxLength: number): Promise<TokenDataset> {
  if (tokenizerFile) return readAlpacaFile(file, readTokenizerFile(tokenizerFile), { vocabSize, maxLength });
  if (/\.json$/i.test(file)) throw new UsageError(`${file} looks like instruction (Alpaca) data: pass its --tokenizer, or give token-id JSONL (.jsonl)`);
  return readTokenJsonlFile(file, { vocabSize });
}

/** A 32-bit FNV-1a of the model's structure (ops, initializer names, types, shapes): a checkpoint names the model it was made from. */
function fingerprint(model: Model): string {
  const parts: string[] = [];
  for (const n of model.graph) parts.push(`${n.domain}:${n.opType}`);
  for (const v of model.graph.initializers) parts.push(`${v.name}:${v.initializer!.dataType}:${v.initializer!.dims.join('x')}`);
  let h = 0x811c9dc5;
  for (const ch of parts.join('|')) h = Math.imul(h ^ ch.charCodeAt(0), 0x01000193) >>> 0;
  return h.toString(16).padStart(8, '0');
}

/** Run settings a checkpoint carries: a resumed run takes each one from it unless given, and a given one must agree. */
interface RunSettings {
  steps: number; maxLen: number; batch: number; mode: Mode; optimizer: Optimizer; neftune: boolean; alpha: number; alphaSchedule: string;
  lr: number; schedule: Schedule; warmup: number; tokenizer: boolean; loss: string;
}

/** What train stores in a checkpoint beside the trainer's state: where the data is, what it was, the settings and the losses so far. */
interface DataPosition {
  batcher: BatcherState; model: string; data: string; settings: RunSettings;
  history: { steps: StepRow[]; evals: Array<[step: number, evalLoss: number]> };
}

export interface StepLine { type: 'step'; run: string; step: number; loss: number; lr: number; alpha: number; tokens: number; tokensPerSecond: number; seconds: number }
export interface EvalLine { type: 'eval'; run: string; step: number; evalLoss: number }

interface RunResult { label: string; steps: StepLine[]; evals: EvalLine[]; model: Model; params: Awaited<ReturnType<Trainer['parameters']>> }

/** Mean next-token cross-entropy of the forward model `model` over `batches` (labels -100 left out). */
async function evalLoss(runtime: Runtime, model: Model, batches: readonly TokenBatch[]): Promise<number> {
  const ort = runtime.ort as unknown as TrainerOrt;
  const session = await ort.InferenceSession.create(encodeModel(model), { logSeverityLevel: 4, ...runtime.sessionOptions });
  let sum = 0, count = 0;
  try {
    for (const b of batches) {
      const feeds: Record<string, TrainerTensor> = {};
      for (const name of session.inputNames) {
        const data = BATCH_INPUTS[name]?.(b);
        if (!data) throw new UsageError(`The eval run needs the model input "${name}", which the data does not give.`);
        feeds[name] = new ort.Tensor('int64', data, [b.batch, b.length]);
      }
      const out = await session.run(feeds);
      const logits = (out['logits'] ?? out[session.outputNames[0]!])!;
      const data = logits.data as Float32Array;
      const vocab = logits.dims.at(-1)!;
      for (let r = 0; r < b.batch; r++) {
        for (let j = 1; j < b.length; j++) {
          const target = b.labels[r * b.length + j]!;
          if (target === IGNORE_INDEX) continue;
          const at = (r * b.length + j - 1) * vocab;
          let max = -Infinity;
          for (let v = 0; v < vocab; v++) max = Math.max(max, data[at + v]!);
          let z = 0;
          for (let v = 0; v < vocab; v++) z += Math.exp(data[at + v]! - max);
          sum += Math.log(z) + max - data[at + Number(target)]!;
          count++;
        }
      }
    }
  } finally {
    await session.release();
  }
  return count ? sum / count : NaN;
}

/** Progress on stderr: a redrawn bar on a terminal, else a plain line now and then. */
class Progress {
  private readonly started = performance.now();
  private tokens = 0;
  private readonly every: number;
  constructor(private readonly label: string, private readonly first: number, private readonly total: number, private readonly tty: boolean) {
    this.every = Math.max(1, Math.round((total - first) / 10));
  }
  update(e: StepLine): void {
    this.tokens += e.tokens;
    const elapsed = (performance.now() - this.started) / 1000;
    const done = e.step - this.first;
    const left = done ? (elapsed / done) * (this.total - e.step) : 0;
    const rate = elapsed ? this.tokens / elapsed : 0;
    const text = `${this.label}step ${e.step}/${this.total}  loss ${e.loss.toFixed(4)}  ${rate.toFixed(0)} tok/s  ${clock(left)} left`;
    if (this.tty) {
      const width = 24, filled = Math.round((width * e.step) / this.total);
      process.stderr.write(`\r[${'#'.repeat(filled)}${'-'.repeat(width - filled)}] ${text}\x1b[K${e.step === this.total ? '\n' : ''}`);
    } else if (done % this.every === 0 || e.step === this.total) {
      process.stderr.write(`${text}\n`);
    }
  }
}

const clock = (seconds: number): string => {
  const s = Math.max(0, Math.round(seconds));
  return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, '0')}`;
};

/** Runs train; with --json, a failure ends the JSON lines with a summary object `ok: false` and the error. */
export async function trainCommand(input: string, flags: TrainFlags): Promise<void> {
  try {
    await train(input, flags);
  } catch (error) {
    if (flags.json) {
      const known = error instanceof OnnxNeftuneError;
      const exitCode = known ? exitCodeOf(error) : 1;
      const detail = known ? { code: error.code, exitCode, message: cliMessage(error), ...(error instanceof TrainingDivergedError ? { step: error.step } : {}) }
        : { code: 'INTERNAL', exitCode, message: String((error as Error)?.message ?? error) };
      process.stdout.write(`${JSON.stringify({ type: 'summary', ok: false, exitCode, error: detail })}\n`);
    }
    throw error;
  }
}

async function train(input: string, flags: TrainFlags): Promise<void> {
  checkFlags(flags);
  const emit = (line: object) => { if (flags.json) process.stdout.write(`${JSON.stringify(line)}\n`); };
  const note = (text: string) => process.stderr.write(`note: ${text}\n`);
  const loaded = readModelFile(input, { deferThreshold: Infinity });
  try {
    checkPaths(flags, input, loaded);
    const base = withExternalDataRead(loaded);
    const vocab = vocabularyOf(base);
    const resume = flags.resume !== undefined ? loadCheckpoint(flags.resume) : undefined;
    const modelPrint = fingerprint(loaded.model);
    const position = resume?.info.dataPosition as DataPosition | undefined;
    if (resume && (position?.model === undefined || position.batcher === undefined || position.settings === undefined)) {
      throw new CheckpointMismatchError(`The checkpoint in ${flags.resume} was not written by this version of neftune train (it has no data position and run settings); resume it with the library.`, ['dataPosition']);
    }
    if (position && position.model !== modelPrint) {
      throw new CheckpointMismatchError(`The checkpoint in ${flags.resume} was made from another model (fingerprint ${position.model}, this model ${modelPrint}). Resume with the model it was trained from.`, ['model']);
    }
    const saved = position?.settings;
    const limit = sequenceLimit(base);
    if (flags.maxLen !== undefined && limit && flags.maxLen > limit.length) {
      throw new UsageError(`--max-len ${flags.maxLen} is longer than the model allows: at most ${limit.length} tokens (${limit.reason}). Give --max-len ${limit.length} or less.`);
    }
    const settings: RunSettings = {
      maxLen: settle('max-len', flags.maxLen, saved?.maxLen, limit ? Math.min(DEFAULT_MAX_LEN, limit.length) : DEFAULT_MAX_LEN),
      batch: settle('batch', flags.batch, saved?.batch, DEFAULTS.batch),
      mode: settle('mode', flags.mode, saved?.mode, DEFAULTS.mode),
      optimizer: settle('optimizer', flags.optimizer, saved?.optimizer, DEFAULTS.optimizer),
      neftune: settle('neftune', flags.neftune, saved?.neftune, true),
      alpha: settle('alpha', flags.alpha, saved?.alpha, DEFAULTS.alpha),
      alphaSchedule: settle('alpha-schedule', flags.alphaSchedule, saved?.alphaSchedule, 'constant'),
      lr: settle('lr', flags.lr, saved?.lr, DEFAULTS.lr),
      schedule: settle('schedule', flags.schedule, saved?.schedule, DEFAULTS.schedule),
      warmup: settle('warmup', flags.warmup, saved?.warmup, DEFAULTS.warmup),
      tokenizer: settle('tokenizer', flags.tokenizer !== undefined, saved?.tokenizer, false),
      loss: 'auto', steps: 0,
    };
    if (flags.maxLen === undefined && !saved && limit && limit.length < DEFAULT_MAX_LEN) note(`--max-len ${settings.maxLen}: the model takes at most ${limit.length} tokens (${limit.reason}); longer rows are cut.`);
    const data = await readDataset(flags.data, flags.tokenizer, vocab, settings.maxLen);
    const dataPrint = dataFingerprint(data);
    if (position && position.data !== dataPrint) {
      throw new CheckpointMismatchError(`The checkpoint in ${flags.resume} was trained on other data: --data ${flags.data} (${data.rows.length} rows) does not match the data it was made with (fingerprint ${position.data}, this data ${dataPrint}). Resume with the same data file${settings.tokenizer ? ' and tokenizer' : ''}.`, ['data']);
    }
    const evalData = flags.evalData ? await readDataset(flags.evalData, flags.tokenizer, vocab, settings.maxLen) : undefined;
    const pack = settings.mode === 'packed';
    const seed = resume?.info.seed ?? flags.seed ?? DEFAULTS.seed;
    const accum = resume?.info.gradientAccumulation ?? flags.gradAccum ?? DEFAULTS.gradAccum;
    const batcherOptions = { batchSize: settings.batch, maxLength: settings.maxLen, seed, pack };
    const counter = new Batcher(data.rows, batcherOptions);
    const total = flags.steps ?? (flags.epochs === undefined && saved ? saved.steps : updatesIn(counter, flags.epochs ?? 1, accum));
    const scheduled = settings.schedule !== 'constant' || settings.alphaSchedule === 'linear';
    if (saved && total !== saved.steps && scheduled) {
      throw new UsageError(`This run's ${flags.steps !== undefined ? `--steps ${total}` : `--epochs ${flags.epochs} (${total} updates)`} differs from the checkpoint's ${saved.steps} updates, and its ${settings.schedule !== 'constant' ? `--schedule ${settings.schedule}` : '--alpha-schedule linear'} was laid out for those. Leave --steps and --epochs out to finish the run.`);
    }
    if (resume && resume.info.step > total) throw new UsageError(`The checkpoint is at update ${resume.info.step}, past --steps ${total}.`);
    settings.steps = total;
    // Labels carry -100 at padding, packed segment starts and prompt tokens; input_ids alone need an attention mask to skip padding.
    const autoLoss = data.rows.some((r) => r.labels) || pack || !base.graph.inputs.some((v) => v.name === 'attention_mask') ? 'causal-lm:labels' : 'causal-lm';
    const loss = settings.loss = settle('loss', flags.loss, saved?.loss, autoLoss);
    // Loaded on demand: the CLI reaches ONNX Runtime only when a command runs a model.
    const { loadRuntime } = await import('../src/runtime/node.js');
    const runtime = await loadRuntime(flags.ep);
    const evalBatches = evalData ? [...new Batcher(evalData.rows, { ...batcherOptions, shuffle: false }).batches(0)] : [];
    const evalEvery = flags.evalEvery ?? Math.max(1, Math.round(total / 20));
    const history = position?.history ?? { steps: [], evals: [] };
    const earlierLines = history.steps.map((row) => LossLog.line(stepOf(row, settings.neftune ? 'neftune' : 'plain'), history.evals.find((e) => e[0] === row[0])?.[1]));
    const log = flags.log !== undefined ? new LossLog(flags.log, earlierLines) : undefined;
    let lastCheckpoint: { path: string; step: number } | undefined;
    const interrupted = () => {
      process.stderr.write(`\ninterrupted. ${lastCheckpoint ? `The last checkpoint is ${lastCheckpoint.path} (update ${lastCheckpoint.step}); continue with the same command and --resume ${path.resolve(flags.checkpointDir!)}` : flags.checkpointDir ? 'No checkpoint was written yet.' : 'No checkpoints were written (give --checkpoint-dir to make the run resumable).'}${flags.log ? `; the loss log ${flags.log} has the updates done` : ''}.\n`);
      // Others (a file write in flight) exit after removing their temp files.
      if (process.listenerCount('SIGINT') <= 1) process.exit(130);
    };
    process.on('SIGINT', interrupted);

    const runOnce = async (neftune: boolean, label: string): Promise<RunResult> => {
      const model = base.clone();
      const alpha = settings.alpha;
      // The patch's own alpha is only a default: the schedule feeds alpha per step (0 included) through the alpha input.
      if (neftune) applyNeftune(model, { alpha: alpha > 0 ? alpha : DEFAULTS.alpha, mode: settings.mode, alphaInput: true });
      const step = buildTrainingStep(model, { optimizer: settings.optimizer, loss: loss as LossChoice, ...(accum > 1 ? { gradients: true } : {}) });
      // Resuming, the checkpoint's schedules hold (the settings above were checked against it).
      const schedule: LearningRateSchedule | undefined = resume ? undefined : {
        kind: settings.schedule, lr: settings.lr,
        ...(settings.warmup ? { warmupSteps: settings.warmup } : {}),
        ...(settings.schedule !== 'constant' ? { totalSteps: total } : {}),
      };
      const alphaSchedule = neftune && !resume ? parseAlphaSchedule(settings.alphaSchedule, alpha, total) : undefined;
      const trainer = await Trainer.create({
        ort: runtime.ort as unknown as TrainerOrt, step, sessionOptions: { logSeverityLevel: 4, ...runtime.sessionOptions },
        // Resuming, the checkpoint's seed and accumulation hold; flags given again must agree (the trainer checks).
        ...(resume ? { resume, ...(flags.seed !== undefined ? { seed: flags.seed } : {}), ...(flags.gradAccum !== undefined ? { gradientAccumulation: flags.gradAccum } : {}) } : { initial: model, seed, gradientAccumulation: accum }),
        ...(schedule ? { schedule } : {}), ...(alphaSchedule ? { alpha: alphaSchedule } : {}),
      });
      try {
        const batcher = new Batcher(data.rows, batcherOptions);
        if (position) batcher.resume(position.batcher);
        const steps: StepLine[] = [], evals: EvalLine[] = [];
        const progress = new Progress(flags.compare ? `${label}: ` : '', trainer.stepCount, total, isatty(2));
        const evaluate = async (at: number) => {
          const line: EvalLine = { type: 'eval', run: label, step: at, evalLoss: await evalLoss(runtime, exportFineTuned(base, await trainer.parameters()).model, evalBatches) };
          evals.push(line);
          emit(line);
        };
        const where = flags.compare ? ` (${label} run)` : '';
        const checkpoint = async () => {
          const done: DataPosition = {
            batcher: batcher.state(), model: modelPrint, data: dataPrint, settings,
            history: { steps: [...history.steps, ...steps.map(stepRow)], evals: [...history.evals, ...evals.map((e) => [e.step, e.evalLoss] as [number, number])] },
          };
          const state = await trainer.checkpoint(done);
          checkFinite(state.tensors, trainer.stepCount, where);
          lastCheckpoint = { path: await saveCheckpoint(flags.checkpointDir!, state), step: trainer.stepCount };
        };
        if (evalBatches.length && trainer.stepCount === 0) await evaluate(0);
        while (trainer.stepCount < total) {
          const micro = Array.from({ length: accum }, () => batcher.next().batch);
          const e: StepEvent = await trainer.trainStep(micro);
          if (!Number.isFinite(e.loss)) throw new TrainingDivergedError(`Training diverged${where}: the loss of update ${e.step} is ${e.loss} (learning rate ${e.lr}). ${DIVERGED_ADVICE}`, e.step);
          const line: StepLine = { type: 'step', run: label, step: e.step, loss: e.loss, lr: e.lr, alpha: e.alpha, tokens: e.tokens, tokensPerSecond: e.seconds ? e.tokens / e.seconds : 0, seconds: e.seconds };
          steps.push(line);
          emit(line);
          progress.update(line);
          if (evalBatches.length && (e.step % evalEvery === 0 || e.step === total)) await evaluate(e.step);
          log?.step(line, evals.at(-1)?.step === e.step ? evals.at(-1)!.evalLoss : undefined);
          if (flags.checkpointDir && flags.checkpointEvery && e.step % flags.checkpointEvery === 0 && e.step !== total) await checkpoint();
        }
        const params = await trainer.parameters();
        checkFinite(params, trainer.stepCount, where);
        if (flags.checkpointDir) await checkpoint();
        return { label, steps, evals, model, params };
      } finally {
        await trainer.release();
      }
    };

    const runs: RunResult[] = [];
    try {
      runs.push(await runOnce(settings.neftune, settings.neftune ? 'neftune' : 'plain'));
      if (flags.compare) runs.push(await runOnce(false, 'plain'));
    } finally {
      process.off('SIGINT', interrupted);
      log?.close();
    }
    const main = runs[0]!;
    const exported = exportFineTuned(loaded.model, main.params);
    const written = await saveFineTuned(loaded, exported, flags.output);
    const earlier = { label: main.label, steps: history.steps.map((r) => stepOf(r, main.label)), evals: history.evals.map(([step, evalLoss]) => ({ type: 'eval' as const, run: main.label, step, evalLoss })) };
    const plotted = runs.map((r, i) => (i === 0 ? { ...r, steps: [...earlier.steps, ...r.steps], evals: [...earlier.evals, ...r.evals] } : r));
    if (flags.plot) await writeFileAtomic(flags.plot, [new TextEncoder().encode(plot(plotted, flags, settings.alpha))]);
    const last = (r: RunResult) => r.steps.at(-1)?.loss ?? null;
    const summary = {
      type: 'summary', ok: true, steps: total, resumedFrom: resume?.info.step ?? null, output: written.path, trainedData: written.trainedData,
      finalLoss: last(main), ...(flags.compare ? { finalLossPlain: last(runs[1]!) } : {}),
      evalLoss: main.evals.at(-1)?.evalLoss ?? null, tokens: main.steps.reduce((a, s) => a + s.tokens, 0),
      rows: data.rows.length, skippedRows: data.skipped, loss, maxLen: settings.maxLen, ep: runtime.ep, checkpointDir: flags.checkpointDir ? path.resolve(flags.checkpointDir) : null,
    };
    if (flags.json) emit(summary);
    else {
      const ran = total - (resume?.info.step ?? 0);
      const what = ran > 0 ? `fine-tuned ${ran} updates (final loss ${last(main)?.toFixed(4) ?? '-'})` : `nothing left to train: the checkpoint is at update ${total} of ${total}; exported its weights`;
      process.stderr.write(`${what}; wrote ${written.path}\n`);
    }
  } finally {
    loaded.close();
  }
}


/** A setting given on the command line, else the checkpoint's (resuming), else the default; given and saved must agree. */
function settle<T>(flag: string, given: T | undefined, saved: T | undefined, fallback: T): T {
  if (given !== undefined && saved !== undefined && given !== saved) {
    throw new UsageError(`--${flag} ${String(given)} differs from the checkpoint's ${String(saved)}; a resumed run keeps the settings it was started with. Leave --${flag} out (it is taken from the checkpoint).`);
  }
  return given ?? saved ?? fallback;
}

/** SHA-256 of the tokenized rows (ids and labels): a resumed run must see the same data. */
function dataFingerprint(data: TokenDataset): string {
  const hash = createHash('sha256');
  for (const r of data.rows) {
    hash.update(`${r.inputIds.length}:${r.labels ? r.labels.length : -1};`);
    for (const ids of [r.inputIds, r.labels]) if (ids) hash.update(new Uint8Array(ids.buffer, ids.byteOffset, ids.byteLength));
  }
  return hash.digest('hex').slice(0, 16);
}

type StepRow = [step: number, loss: number, lr: number, alpha: number, tokens: number, seconds: number];
const stepRow = (s: StepLine): StepRow => [s.step, s.loss, s.lr, s.alpha, s.tokens, s.seconds];
const stepOf = ([step, loss, lr, alpha, tokens, seconds]: StepRow, run: string): StepLine =>
  ({ type: 'step', run, step, loss, lr, alpha, tokens, tokensPerSecond: seconds ? tokens / seconds : 0, seconds });

/**
 * The --log CSV, written as training goes (a line per update, straight to the file): a killed run
 * keeps its updates. Opened at the first line of this run, so a run failing before it writes nothing.
 */
class LossLog {
  private fd: number | undefined;
  private pending = ['run,step,loss,lr,alpha,tokens,seconds,eval_loss'];
  constructor(private readonly file: string, earlier: readonly string[]) { this.pending.push(...earlier); }
  static line(s: StepLine, evalLoss: number | undefined): string {
    return [s.run, s.step, s.loss, s.lr, s.alpha, s.tokens, s.seconds.toFixed(4), evalLoss ?? ''].join(',');
  }
  step(s: StepLine, evalLoss: number | undefined): void {
    this.fd ??= openSync(this.file, 'w');
    writeSync(this.fd, `${[...this.pending, LossLog.line(s, evalLoss)].join('\n')}\n`);
    this.pending = [];
  }
  close(): void { if (this.fd !== undefined) closeSync(this.fd); }
}

/** Updates in `epochs` epochs of micro-batches, `accum` micro-batches per update (at least one). */
function updatesIn(batcher: Batcher, epochs: number, accum: number): number {
  let micro = 0;
  for (let e = 0; e < epochs; e++) micro += batcher.batchCount(e);
  if (micro < accum) throw new TrainingDataError(`The data makes ${micro} micro-batch(es) in ${epochs} epoch(s), fewer than --grad-accum ${accum}; add data or lower --grad-accum.`, 'options');
  return Math.floor(micro / accum);
}

function plot(runs: readonly Pick<RunResult, 'label' | 'steps' | 'evals'>[], flags: TrainFlags, alpha: number): string {
  const name = (r: Pick<RunResult, 'label'>) => (r.label === 'neftune' ? `NEFTune alpha ${alpha}` : 'no NEFTune');
  const series: LossSeries[] = [];
  for (const r of runs) {
    series.push({ name: `${name(r)} (train)`, points: r.steps.map((s) => ({ step: s.step, loss: s.loss })) });
    if (r.evals.length) series.push({ name: `${name(r)} (eval)`, points: r.evals.map((e) => ({ step: e.step, loss: e.evalLoss })), dashed: true });
  }
  return lossPlotSvg(series, { title: `Fine-tuning loss (${path.basename(flags.data)})`, xLabel: 'update', yLabel: 'loss', smoothing: 0.6 });
}
