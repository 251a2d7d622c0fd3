/**
 * The fine-tuning loop over a training-step graph (step.ts) on ONNX Runtime. Browser-safe: the ORT
 * module (onnxruntime-node or onnxruntime-web) is passed in, as verify does.
 *
 * - One session for the whole run. Parameters and optimizer state live in ORT tensors: each
 *   `<name>.new` output is fed back as the next run's input as it is (no copy in JavaScript). On
 *   CPU / wasm ORT returns outputs in CPU memory, so that is where they live; with a GPU provider
 *   of onnxruntime-web, `keepOnDevice` asks ORT (preferredOutputLocation) to keep them there.
 * - Gradient accumulation (N micro-batches per update): the step graph is rewritten so the
 *   optimizer consumes acc + w * grad instead of grad, with acc a new input and acc.new a new
 *   output. Micro-batches 1..N-1 fetch only loss and acc.new (no update), the last one fetches the
 *   updated parameters. w is the micro-batch's share of the update's loss targets, so N half
 *   batches give the gradient of the whole batch (the loss is a mean over targets).
 * - NEFTune noise is keyed per (seed, update, micro-batch) (seeded-noise.ts), so a resumed run and
 *   another runtime draw exactly the same noise; alpha follows a schedule fed to the patch's alpha input.
 */
import { encodeModel } from '../graph/codec.js';
import { errorMessage, optionName } from '../graph/errors.js';
import { DataType, bfloat16BitsToFloat32, dataTypeName, float16BitsToFloat32, parseDataType } from '../graph/dtype.js';
import { Node, Value, type Model } from '../graph/ir.js';
import { tensorType } from '../graph/builder.js';
import { NameAllocator } from '../graph/names.js';
import { Tensor, type TensorData } from '../graph/tensor.js';
import { readPatchRecord } from '../passes/neftune/record.js';
import { findEmbeddings } from '../passes/embeddings.js';
import { DEFAULT_ALPHA_INPUT } from '../passes/neftune/options.js';
import { IGNORE_INDEX, type TokenBatch } from './batch.js';
import { CHECKPOINT_FORMAT, checkCheckpointFits, type ExpectedTensor, type TrainingCheckpoint } from './checkpoint.js';
import { TrainingOptionError, TrainingRunError } from './errors.js';
import { alphaAt, checkAlphaSchedule, checkLearningRateSchedule, learningRateAt, type AlphaSchedule, type LearningRateSchedule } from './schedules.js';
import { keyPatchNoise, noiseKey, NOISE_KEY_INPUT } from './seeded-noise.js';
import type { TrainingStep } from './step.js';

export interface TrainerTensor { readonly data: unknown; readonly dims: readonly number[]; readonly type: string; getData?(): Promise<unknown> }
export interface TrainerSession {
  readonly inputNames: readonly string[];
  readonly outputNames: readonly string[];
  run(feeds: Record<string, TrainerTensor>, fetches?: readonly string[]): Promise<Record<string, TrainerTensor>>;
  release(): Promise<void>;
}
/** The part of onnxruntime-node / onnxruntime-web the trainer uses. */
export interface TrainerOrt {
  InferenceSession: { create(model: Uint8Array, options?: Record<string, unknown>): Promise<TrainerSession> };
  Tensor: new (type: string, data: unknown, dims: readonly number[]) => TrainerTensor;
}

export interface TrainerOptions {
  ort: TrainerOrt;
  /** From buildTrainingStep; with gradientAccumulation > 1 it must be built with `gradients: true`. */
  step: TrainingStep;
  /** The model the step was built from: initial parameter values (ignored when resuming). */
  initial?: Model;
  /** Continue this checkpoint (its schedules, seed and accumulation are used; the options' must match or be left out). */
  resume?: TrainingCheckpoint;
  schedule?: LearningRateSchedule;
  /** NEFTune alpha per update; needs a patch made with alphaInput unless it is constant. */
  alpha?: AlphaSchedule;
  /** Seed of the NEFTune noise (default 0). */
  seed?: number;
  gradientAccumulation?: number;
  sessionOptions?: Record<string, unknown>;
  /** onnxruntime-web GPU providers: keep parameters and state on the device ('gpu-buffer' for WebGPU, 'ml-tensor' for WebNN). */
  keepOnDevice?: 'gpu-buffer' | 'ml-tensor';
  onStep?: (event: StepEvent) => void;
}

export interface StepEvent {
  /** Updates done, this one included. */
  step: number;
  /** Loss of the update: the micro-batch losses weighted by their loss targets. */
  loss: number;
  /** Real tokens in the update's micro-batches. */
  tokens: number;
  lr: number;
  /** NEFTune alpha of this update (0 when the model is not patched). */
  alpha: number;
  seconds: number;
}

const ORT_TYPE: Partial<Record<DataType, string>> = {
  [DataType.FLOAT]: 'float32', [DataType.DOUBLE]: 'float64', [DataType.FLOAT16]: 'float16', [DataType.BFLOAT16]: 'bfloat16',
};
const DTYPE_OF = new Map(Object.entries(ORT_TYPE).map(([k, v]) => [v, Number(k) as DataType]));

/** A batch field for each graph input the trainer knows how to feed (also the eval runs' feeds). */
export const BATCH_INPUTS: Record<string, (b: TokenBatch) => BigInt64Array | undefined> = {
  input_ids: (b) => b.inputIds, attention_mask: (b) => b.attentionMask, labels: (b) => b.labels,
  // Unpacked rows (right-padded) count positions from 0 as Hugging Face models do without position_ids.
  position_ids: (b) => b.positionIds ?? BigInt64Array.from({ length: b.batch * b.length }, (_, i) => BigInt(i % b.length)),
};

interface Slot { input: string; output: string; expected: ExpectedTensor }

export class Trainer {
  private updates: number;
  private closed = false;

  private constructor(
    private readonly ort: TrainerOrt,
    private readonly session: TrainerSession,
    private readonly step: TrainingStep,
    private readonly slots: { params: Slot[]; state: Slot[]; acc: Slot[] },
    private readonly values: Map<string, TrainerTensor>,
    private readonly inputs: { batch: string[]; alpha: string | undefined; key: string | undefined; weight: string | undefined },
    readonly schedule: LearningRateSchedule,
    readonly alpha: AlphaSchedule | null,
    readonly seed: number,
    readonly gradientAccumulation: number,
    private readonly onStep: ((e: StepEvent) => void) | undefined,
    resumed: TrainingCheckpoint | undefined,
  ) {
    this.updates = resumed?.info.step ?? 0;
    this.dataPosition = resumed?.info.dataPosition;
  }

  /** The data position of the checkpoint resumed from (undefined for a fresh run). */
  readonly dataPosition: unknown;

  static async create(options: TrainerOptions): Promise<Trainer> {
    const { step, resume } = options;
    const info = resume?.info;
    const schedule = checkLearningRateSchedule(pick('schedule', options.schedule, info?.schedule));
    const alphaOption = pick('alpha', options.alpha, info ? info.alpha ?? undefined : undefined, true);
    const alpha = alphaOption ? checkAlphaSchedule(alphaOption) : null;
    const seed = pick('seed', options.seed, info?.seed, true) ?? 0;
    const accumulation = pick('gradientAccumulation', options.gradientAccumulation, info?.gradientAccumulation, true) ?? 1;
    if (!Number.isInteger(seed)) throw new TrainingOptionError(`seed must be an integer, got ${seed}.`);
    if (!Number.isInteger(accumulation) || accumulation < 1) throw new TrainingOptionError(`gradientAccumulation must be an integer >= 1, got ${accumulation}.`);

    const model = step.model.clone();
    const patch = readPatchRecord(model);
    const alphaName = patch ? (typeof patch.options.alphaInput === 'string' ? patch.options.alphaInput : patch.options.alphaInput ? DEFAULT_ALPHA_INPUT : undefined) : undefined;
    if (alpha && !patch) throw new TrainingOptionError('An alpha schedule was given, but the model has no NEFTune patch. Patch it first (applyNeftune with alphaInput: true), or leave alpha out.');
    if (alpha && !alphaName && (alpha.kind !== 'constant' || alpha.offAfter !== undefined || alpha.alpha !== patch!.options.alpha)) {
      throw new TrainingOptionError(`The patch has alpha ${patch!.options.alpha} built in; an alpha schedule needs a patch made with alphaInput: true.`);
    }
    keyPatchNoise(model);
    const { record } = step;
    const acc = accumulation > 1 ? addGradientAccumulation(model, step) : { slots: [] as Slot[], weight: undefined };

    const graph = model.graph;
    const expected = (name: string): ExpectedTensor => {
      const v = graph.inputs.find((i) => i.name === name)!;
      return { name, dataType: v.elemType ?? DataType.FLOAT, dims: (v.shape ?? []).map((d) => Number(d)) };
    };
    const slot = (p: { input: string; output: string }): Slot => ({ ...p, expected: expected(p.input) });
    const slots = { params: record.params.map(slot), state: record.state.map(slot), acc: acc.slots };

    const known = new Set([...record.params, ...record.state].map((p) => p.input).concat(acc.slots.map((s) => s.input), [record.learningRate, record.step ?? '', alphaName ?? '', NOISE_KEY_INPUT, acc.weight ?? '']));
    const batchInputs = graph.inputs.map((v) => v.name).filter((n) => !known.has(n));
    const unknown = batchInputs.filter((n) => !(n in BATCH_INPUTS));
    if (unknown.length) throw new TrainingOptionError(`The step graph has inputs the trainer cannot feed: ${unknown.join(', ')} (it feeds ${Object.keys(BATCH_INPUTS).join(', ')} from the batch). Freeze them into the model or remove them.`);

    const values = new Map<string, TrainerTensor>();
    const toOrt = (t: Tensor): TrainerTensor => {
      const type = ORT_TYPE[t.dataType];
      if (!type) throw new TrainingOptionError(`${t.name}: ${dataTypeName(t.dataType)} parameters are not supported by the trainer (float32, float64, float16, bfloat16 are).`);
      return new options.ort.Tensor(type, t.toArray(), t.dims);
    };
    if (resume) {
      checkCheckpointFits(resume, [...slots.params, ...slots.state].map((s) => s.expected), record.optimizer);
      for (const t of resume.tensors) values.set(t.name!, toOrt(t));
    } else {
      if (!options.initial) throw new TrainingOptionError('Trainer.create needs `initial` (the model the step was built from) or `resume` (a checkpoint).');
      for (const s of slots.params) {
        const init = options.initial.graph.initializer(s.input)?.initializer;
        if (!init || init.storage === 'external') throw new TrainingOptionError(`The initial model has no ${init ? 'loaded ' : ''}initializer "${s.input}"; pass the model the step was built from${init ? ', with its external data read' : ''}.`);
        values.set(s.input, toOrt(asMasterWeight(init, s.expected)));
      }
    }
    for (const s of [...slots.state, ...slots.acc]) if (!values.has(s.input)) values.set(s.input, zeros(options.ort, s.expected));

    const sessionOptions: Record<string, unknown> = { ...options.sessionOptions };
    if (options.keepOnDevice) {
      sessionOptions['preferredOutputLocation'] = Object.fromEntries([...slots.params, ...slots.state, ...slots.acc].map((s) => [s.output, options.keepOnDevice]));
    }
    const session = await options.ort.InferenceSession.create(encodeModel(model), sessionOptions);
    const hasKey = graph.inputs.some((v) => v.name === NOISE_KEY_INPUT);
    return new Trainer(options.ort, session, step, slots, values, { batch: batchInputs, alpha: alphaName, key: hasKey ? NOISE_KEY_INPUT : undefined, weight: acc.weight },
      schedule, alpha, seed, accumulation, options.onStep, resume);
  }

  /** Updates done so far. */
  get stepCount(): number { return this.updates; }

  /** One update from `gradientAccumulation` micro-batches. */
  async trainStep(microBatches: TokenBatch | readonly TokenBatch[]): Promise<StepEvent> {
    if (this.closed) throw new TrainingOptionError('This trainer was released; create a new one (resume from a checkpoint).');
    const batches = Array.isArray(microBatches) ? microBatches as readonly TokenBatch[] : [microBatches as TokenBatch];
    if (batches.length !== this.gradientAccumulation) throw new TrainingOptionError(`An update takes ${this.gradientAccumulation} micro-batch(es) (gradientAccumulation), got ${batches.length}.`);
    const started = performance.now();
    const { ort, step: { record }, slots, values, inputs } = this;
    const index = this.updates;
    const lr = learningRateAt(this.schedule, index);
    const alpha = this.alpha ? alphaAt(this.alpha, index) : 0;
    const targets = batches.map((b) => lossTargets(b, inputs.batch, record.lossTargets === 'per-position'));
    const total = targets.reduce((a, b) => a + b, 0);
    let loss = 0;
    for (let m = 0; m < batches.length; m++) {
      const b = batches[m]!;
      const feeds: Record<string, TrainerTensor> = {};
      for (const name of inputs.batch) {
        const data = BATCH_INPUTS[name]!(b);
        if (!data) throw new TrainingOptionError(`The step graph needs "${name}", but the batch has none.`);
        feeds[name] = new ort.Tensor('int64', data, [b.batch, b.length]);
      }
      for (const [name, t] of values) feeds[name] = t;
      feeds[record.learningRate] = new ort.Tensor('float32', Float32Array.from([lr]), []);
      if (record.step) feeds[record.step] = new ort.Tensor('int64', BigInt64Array.from([BigInt(index + 1)]), []);
      if (inputs.alpha) feeds[inputs.alpha] = new ort.Tensor('float32', Float32Array.from([alpha]), []);
      if (inputs.key) feeds[inputs.key] = new ort.Tensor('uint64', BigUint64Array.from([noiseKey(this.seed, index, m)]), []);
      const weight = total > 0 ? targets[m]! / total : 1 / batches.length;
      if (inputs.weight) feeds[inputs.weight] = new ort.Tensor('float32', Float32Array.from([weight]), []);
      const last = m === batches.length - 1;
      const wired = last ? [...slots.params, ...slots.state] : slots.acc;
      const out = await this.run(feeds, [record.loss, ...wired.map((s) => s.output)], { update: index + 1, micro: m, of: batches.length, batch: b });
      loss += weight * Number((out[record.loss]!.data as Float32Array)[0]);
      for (const s of wired) values.set(s.input, out[s.output]!);
    }
    for (const s of slots.acc) values.set(s.input, zeros(ort, s.expected));
    this.updates++;
    const event: StepEvent = { step: this.updates, loss, tokens: batches.reduce((a, b) => a + b.tokens, 0), lr, alpha, seconds: (performance.now() - started) / 1000 };
    this.onStep?.(event);
    return event;
  }

  /** Current parameters as ONNX tensors (named as in the forward model), read back from the device when needed. */
  async parameters(): Promise<Tensor[]> { return this.tensorsOf(this.slots.params); }

  /** Everything a resumed run needs; `dataPosition` is the data loader's, handed back on resume. */
  async checkpoint(dataPosition: unknown = null): Promise<TrainingCheckpoint> {
    const { record } = this.step;
    return {
      info: {
        format: CHECKPOINT_FORMAT, version: 1, step: this.updates, seed: this.seed, schedule: this.schedule, alpha: this.alpha,
        gradientAccumulation: this.gradientAccumulation, optimizer: record.optimizer, hyperparameters: record.hyperparameters,
        params: this.slots.params.map((s) => s.input), state: this.slots.state.map((s) => s.input), dataPosition,
      },
      tensors: await this.tensorsOf([...this.slots.params, ...this.slots.state]),
    };
  }

  async release(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.session.release();
  }

  /** session.run, its failures turned into a TrainingRunError naming the update and the batch. */
  private async run(feeds: Record<string, TrainerTensor>, fetches: string[], at: { update: number; micro: number; of: number; batch: TokenBatch }): Promise<Record<string, TrainerTensor>> {
    try {
      return await this.session.run(feeds, fetches);
    } catch (error) {
      const ortMessage = error instanceof Error ? error.message : String(error);
      const { batch: b } = at;
      const where = `Update ${at.update}${at.of > 1 ? ` (micro-batch ${at.micro + 1} of ${at.of})` : ''}`;
      const limit = sequenceLimit(this.step.model);
      const hint = limit && b.length > limit.length
        ? errorMessage`The batch is ${b.length} tokens long, but the model takes at most ${limit.length} (${limit.reason}): cap the row length (${optionName('maxLength')}) at ${limit.length}.`
        : 'Check that the data fits the model (row length within its positions, token ids below its vocabulary size).';
      const said = ortMessage.trim().replace(/([^.])$/, '$1.');
      throw new TrainingRunError(errorMessage`${where} failed in ONNX Runtime on a batch of ${b.batch} rows x ${b.length} tokens: ${said} ${hint}`,
        at.update, [b.batch, b.length], ortMessage, error);
    }
  }

  private async tensorsOf(slots: readonly Slot[]): Promise<Tensor[]> {
    const out: Tensor[] = [];
    for (const s of slots) {
      const t = this.values.get(s.input)!;
      const data = (t.getData ? await t.getData() : t.data) as TensorData;
      out.push(Tensor.fromArray(DTYPE_OF.get(t.type) ?? parseDataType(t.type), t.dims, data, s.input));
    }
    return out;
  }
}

/** The longest row a model accepts, and why; see `maxSequenceLength`. */
export interface SequenceLimit { length: number; reason: string }

/**
 * The longest sequence `model` (a forward model or its training step) accepts, when something static
 * bounds it: the rows of a position-indexed table (learned position embeddings, a rotary cos/sin
 * cache) or a static sequence dim of input_ids. Undefined when nothing does (rotary computed at run time).
 */
export function maxSequenceLength(model: Model): number | undefined {
  return sequenceLimit(model)?.length;
}

/** `maxSequenceLength` with the reason, for messages. */
export function sequenceLimit(model: Model): SequenceLimit | undefined {
  const limits: SequenceLimit[] = [];
  const ids = model.graph.inputs.find((v) => v.name === 'input_ids');
  const seq = ids?.shape?.[1];
  if (typeof seq === 'number' && seq > 0) limits.push({ length: seq, reason: `input "input_ids" has a static sequence dim ${seq}` });
  for (const c of findEmbeddings(model).candidates) {
    const byPosition = c.role === 'position' || c.indices.source === 'position-computation';
    if (byPosition && c.graphPath.length === 1 && c.table.rows !== undefined) {
      limits.push({ length: c.table.rows, reason: `${c.kind} "${c.nodeLabel}" reads position table "${c.table.name}" of ${c.table.rows} rows` });
    }
  }
  return limits.reduce<SequenceLimit | undefined>((a, l) => (!a || l.length < a.length ? l : a), undefined);
}

/** A float16/bfloat16 initial value as the float32 master weight the step trains (exact: every half value is a float32). */
function asMasterWeight(t: Tensor, expected: ExpectedTensor): Tensor {
  const widen = t.dataType === DataType.FLOAT16 ? float16BitsToFloat32 : t.dataType === DataType.BFLOAT16 ? bfloat16BitsToFloat32 : undefined;
  if (expected.dataType !== DataType.FLOAT || !widen) return t;
  return Tensor.fromArray(DataType.FLOAT, t.dims, Float32Array.from(t.toArray() as Uint16Array, widen), t.name);
}

/** An option given both directly and by the checkpoint must agree; either alone is taken. */
function pick<T>(name: string, given: T | undefined, saved: T | undefined, optional = false): T {
  if (given !== undefined && saved !== undefined && JSON.stringify(given) !== JSON.stringify(saved)) {
    throw new TrainingOptionError(`${name} differs from the checkpoint's (${JSON.stringify(given)} vs ${JSON.stringify(saved)}); a resumed run keeps the checkpoint's. Leave ${name} out when resuming.`);
  }
  const value = given ?? saved;
  if (value === undefined && !optional) throw new TrainingOptionError(`The trainer needs ${name}.`);
  return value as T;
}

function zeros(ort: TrainerOrt, e: ExpectedTensor): TrainerTensor {
  const count = e.dims.reduce((a, b) => a * b, 1);
  const type = ORT_TYPE[e.dataType] ?? 'float32';
  const data = type === 'float64' ? new Float64Array(count) : type === 'float32' ? new Float32Array(count) : new Uint16Array(count);
  return new ort.Tensor(type, data, e.dims);
}

/**
 * Positions the loss counts: the targets (1..L-1 of each row for a next-token loss, 0..L-1 for a
 * per-position one) that are not IGNORE_INDEX (labels), or that are real tokens (attention mask),
 * or all of them.
 */
function lossTargets(b: TokenBatch, fed: readonly string[], perPosition: boolean): number {
  const labels = fed.includes('labels'), mask = fed.includes('attention_mask');
  let n = 0;
  for (let r = 0; r < b.batch; r++) {
    for (let j = perPosition ? 0 : 1; j < b.length; j++) {
      const i = r * b.length + j;
      if (labels ? b.labels[i] !== IGNORE_INDEX : mask ? b.attentionMask[i] !== 0n : true) n++;
    }
  }
  return n;
}

/**
 * The step graph with the optimizer fed acc + w * grad: new inputs `<param>.grad_acc` and a float
 * scalar weight, new outputs `<param>.grad_acc.new`. The gradients are found through the step's
 * `.grad` outputs (built with `gradients: true`).
 */
function addGradientAccumulation(model: Model, step: TrainingStep): { slots: Slot[]; weight: string } {
  const graph = model.graph;
  const names = new NameAllocator(model);
  const missing = step.record.params.filter((p) => !p.grad);
  if (missing.length) throw new TrainingOptionError('Gradient accumulation needs the step built with `gradients: true` (buildTrainingStep), so the trainer can find each gradient.');
  const weight = new Value(names.fresh('grad_weight'));
  weight.info = { name: weight.name, type: tensorType(DataType.FLOAT, []) };
  graph.addInput(weight);
  const slots: Slot[] = [];
  for (const p of step.record.params) {
    const gradOut = graph.outputs.find((o) => o.name === p.grad)!;
    const identity = gradOut.producer!;
    const grad = identity.input(0)!;
    const param = graph.inputs.find((v) => v.name === p.input)!;
    const elem = param.elemType ?? DataType.FLOAT;
    const acc = new Value(names.fresh(`${p.input}.grad_acc`));
    acc.info = { name: acc.name, type: tensorType(elem, param.shape ?? []) };
    graph.addInput(acc);
    // Inserted after the Identity in reverse order of use, so each node precedes its consumers.
    const sumValue = new Value(names.fresh(`${p.input}.grad_acc_sum`));
    const w = elem === DataType.FLOAT ? weight : undefined;
    if (!w) throw new TrainingOptionError(`Gradient accumulation supports float32 parameters; ${p.input} is ${dataTypeName(elem)}.`);
    const scaled = new Value(names.fresh(`${p.input}.grad_acc_scaled`));
    const mul = new Node('Mul', [grad, w], [scaled], { name: names.fresh('grad_acc_Mul') });
    const add = new Node('Add', [acc, scaled], [sumValue], { name: names.fresh('grad_acc_Add') });
    graph.insertAfter(identity, add);
    graph.insertAfter(identity, mul);
    grad.replaceAllUsesWith(sumValue, { except: [identity, mul] });
    const outName = names.fresh(`${p.input}.grad_acc.new`);
    const outValue = new Value(outName);
    const copy = new Node('Identity', [sumValue], [outValue], { name: names.fresh('grad_acc_Identity') });
    graph.insertAfter(add, copy);
    outValue.info = { name: outName, type: tensorType(elem, param.shape ?? []) };
    graph.addOutput(outValue);
    slots.push({ input: acc.name, output: outName, expected: { name: acc.name, dataType: elem, dims: (param.shape ?? []).map(Number) } });
  }
  return { slots, weight: weight.name };
}
