/**
 * A small ONNX Runtime training-artifacts folder, built with the project's own builder, laid out as
 * ORT's artifact generator (onnxruntime.training.artifacts.generate_artifacts) lays it out:
 *
 *   training_model.onnx   user inputs, then parameters (graph inputs), then one
 *                         `<param>_grad.accumulation.buffer` per parameter, then `lazy_reset_grad`;
 *                         outputs: loss first, then `<param>_grad.accumulation.out`. Backward in
 *                         ORT's gradient ops (GatherGrad, FusedMatMul), accumulated with InPlaceAccumulatorV2.
 *   eval_model.onnx       the same forward and loss, no backward.
 *   optimizer_model.onnx  one com.microsoft SGDOptimizerV2 with the inputs the runtime checks.
 *   checkpoint            flatbuffer (identifier ODTC, version 2) holding the parameter values.
 *
 * The model: embedding_output = Gather(embedding.weight, input_ids); logits = embedding_output @ head.weight;
 * loss = mean((logits - target)^2). The loss is quadratic in the embedding, so dL/d(embedding) and
 * dL/d(head.weight) both depend on the embedding value: noise added to it changes every gradient.
 */
import { copyFileSync, mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { Builder } from 'flatbuffers';
import { DataType, ModelBuilder, Value, attr, encodeModel, tensorType, type Model } from '../../src/graph/index.js';
import { randomFloats } from '../../examples/models.js';

export const ARTIFACT_FILES = {
  training: 'training_model.onnx',
  eval: 'eval_model.onnx',
  optimizer: 'optimizer_model.onnx',
  checkpoint: 'checkpoint',
} as const;

/** The token-embedding lookup's output: graph output of the training model (noisy once patched). */
export const LOOKUP_OUTPUT = 'embedding_output';
export const EMBEDDING_TABLE = 'embedding.weight';
export const HEAD_WEIGHT = 'head.weight';

export interface TrainingArtifactsOptions {
  vocab?: number;
  dim?: number;
  classes?: number;
  /** Seed of the initial parameter values. */
  seed?: number;
  /** Default-domain opset of the three models (com.microsoft is imported at version 1). */
  opset?: number;
  /**
   * The optimizer graph multiplies its `learning_rate` input by this (onnxruntime-web 1.19.2 has no
   * learning-rate setter: the runtime always feeds 0.001). Effective rate: 0.001 * scale.
   */
  learningRateScale?: number;
}

export interface ArtifactParameter {
  name: string;
  dims: number[];
  values: Float32Array;
}

export interface TrainingArtifacts {
  dir: string;
  /** Absolute paths of the four files. */
  files: Record<keyof typeof ARTIFACT_FILES, string>;
  vocab: number;
  dim: number;
  classes: number;
  learningRateScale: number;
  /** Initial values, in the training model's input order (the order getContiguousParameters uses). */
  parameters: ArtifactParameter[];
}

type Resolved = Required<TrainingArtifactsOptions>;

function resolve(options: TrainingArtifactsOptions): Resolved {
  return { vocab: 32, dim: 16, classes: 4, seed: 11, opset: 17, learningRateScale: 1, ...options };
}

export function initialParameters(options: TrainingArtifactsOptions = {}): ArtifactParameter[] {
  const o = resolve(options);
  return [
    { name: EMBEDDING_TABLE, dims: [o.vocab, o.dim], values: randomFloats(o.vocab * o.dim, o.seed) },
    { name: HEAD_WEIGHT, dims: [o.dim, o.classes], values: randomFloats(o.dim * o.classes, o.seed + 1) },
  ];
}

interface Forward { ids: Value; target: Value; table: Value; head: Value; emb: Value; err: Value; loss: Value }

function forward(b: ModelBuilder, o: Resolved): Forward {
  const ids = b.input('input_ids', 'int64', ['batch', 'sequence']);
  const target = b.input('target', 'float', ['batch', 'sequence', o.classes]);
  const table = b.input(EMBEDDING_TABLE, 'float', [o.vocab, o.dim]);
  const head = b.input(HEAD_WEIGHT, 'float', [o.dim, o.classes]);
  const emb = b.op('Gather', [table, ids], { axis: 0 }, { name: 'embedding', outputs: [LOOKUP_OUTPUT] });
  const logits = b.op('MatMul', [emb, head], {}, { name: 'head', outputs: ['logits'] });
  const err = b.op('Sub', [logits, target], {}, { name: 'error', outputs: ['error'] });
  const squared = b.op('Mul', [err, err], {}, { name: 'squared', outputs: ['squared'] });
  const loss = b.op('ReduceMean', [squared], { keepdims: 0 }, { name: 'loss', outputs: ['loss'] });
  return { ids, target, table, head, emb, err, loss };
}

const modelOptions = (o: Resolved, graphName: string) =>
  ({ opset: o.opset, irVersion: 8, opsets: { 'com.microsoft': 1 }, graphName, producerName: 'onnx-neftune tests' });

/** training_model.onnx: forward, backward in ORT's gradient ops, gradients accumulated in place. */
export function buildTrainingModel(options: TrainingArtifactsOptions = {}): Model {
  const o = resolve(options);
  const b = new ModelBuilder(modelOptions(o, 'training_model'));
  const f = forward(b, o);
  const buffers = [EMBEDDING_TABLE, HEAD_WEIGHT].map((p, i) =>
    b.input(`${p}_grad.accumulation.buffer`, 'float', i === 0 ? [o.vocab, o.dim] : [o.dim, o.classes]));
  const reset = b.input('lazy_reset_grad', 'bool', [1]);
  const ms = { domain: 'com.microsoft' };

  // d loss / d squared = 1 / N everywhere (ReduceMean), seeded by `loss_grad` = 1 as ORT seeds it.
  const seed = b.constant('loss_grad', 'float', [], [1]);
  const count = b.op('Cast', [b.op('Size', [f.err])], { to: DataType.FLOAT });
  const dSquared = b.op('Div', [b.op('Expand', [seed, b.op('Shape', [f.err])]), count], {}, { outputs: ['squared_grad'] });
  const dLogits = b.op('Mul', [b.op('Mul', [dSquared, f.err]), b.constant('two', 'float', [], [2])], {}, { outputs: ['logits_grad'] });
  // MatMul gradients as ORT writes them: FusedMatMul with a transposed operand.
  const dEmb = b.op('FusedMatMul', [dLogits, f.head], { transA: 0, transB: 1, alpha: attr.float(1) }, { ...ms, outputs: [`${LOOKUP_OUTPUT}_grad`] });
  const embFlat = b.op('Reshape', [f.emb, b.constant('flat_dim', 'int64', [2], [-1, o.dim])]);
  const dLogitsFlat = b.op('Reshape', [dLogits, b.constant('flat_classes', 'int64', [2], [-1, o.classes])]);
  const dHead = b.op('FusedMatMul', [embFlat, dLogitsFlat], { transA: 1, transB: 0, alpha: attr.float(1) }, { ...ms, outputs: [`${HEAD_WEIGHT}_grad`] });
  // Gather's gradient reads the table's shape, the ids and the upstream gradient, not the lookup output.
  const dTable = b.op('GatherGrad', [b.op('Shape', [f.table]), f.ids, dEmb], { axis: 0 }, { ...ms, outputs: [`${EMBEDDING_TABLE}_grad`] });

  b.output(f.loss, 'float', []);
  for (const [i, grad] of [dTable, dHead].entries()) {
    const name = `${i === 0 ? EMBEDDING_TABLE : HEAD_WEIGHT}_grad.accumulation.out`;
    const flag = b.op('InPlaceAccumulatorV2', [buffers[i]!, grad, reset], {}, { ...ms, outputs: [name] });
    b.output(flag, 'bool');
  }
  // Extra output (not a gradient name, so the runtime returns it): the value the backward read.
  b.output(f.emb, 'float', ['batch', 'sequence', o.dim]);
  return b.build();
}

/** eval_model.onnx: forward and loss; parameters are graph inputs here too. */
export function buildEvalModel(options: TrainingArtifactsOptions = {}): Model {
  const o = resolve(options);
  const b = new ModelBuilder(modelOptions(o, 'eval_model'));
  b.output(forward(b, o).loss, 'float', []);
  return b.build();
}

/**
 * optimizer_model.onnx: SGDOptimizerV2 over the parameter and gradient sequences. Inputs exactly as
 * the runtime checks them for SGD: learning_rate, step, params, gradients, first_order_moments.
 */
export function buildOptimizerModel(options: TrainingArtifactsOptions = {}): Model {
  const o = resolve(options);
  const b = new ModelBuilder(modelOptions(o, 'optimizer_model'));
  const lr = b.input('learning_rate', 'float', [1]);
  b.input('step', 'int64', [1]);
  const sequenceInput = (name: string): Value => {
    const v = b.input(name, 'float');
    v.info = { name, type: { sequence_type: { elem_type: tensorType('float') } } };
    return v;
  };
  const params = sequenceInput('params');
  const grads = sequenceInput('gradients');
  // The 1.19.2 runtime feeds SGD a (zero, unused) momentum sequence and checks the input is there.
  sequenceInput('first_order_moments');
  const rate = o.learningRateScale === 1 ? lr : b.op('Mul', [lr, b.constant('learning_rate_scale', 'float', [1], [o.learningRateScale])]);
  const done = b.op('SGDOptimizerV2', [rate, params, grads], {}, { domain: 'com.microsoft', outputs: ['update_completed'] });
  b.output(done, 'bool');
  return b.build();
}

// ort_training_checkpoint.fbs (namespace onnxruntime.fbs) field slots, from ORT's schema.
const TENSOR = { name: 0, docString: 1, dims: 2, dataType: 3, rawData: 4 };
const MODULE_STATE = { requiresGradParams: 0, frozenParams: 1 };
const CHECKPOINT = { version: 0, moduleState: 1 };
export const CHECKPOINT_VERSION = 2;

/** A checkpoint with these trainable parameters (float32) and the given frozen ones; no optimizer state. */
export function encodeCheckpoint(trainable: readonly ArtifactParameter[], frozen: readonly ArtifactParameter[] = []): Uint8Array {
  const b = new Builder(1024);
  const tensor = (p: ArtifactParameter): number => {
    const name = b.createString(p.name);
    b.startVector(8, p.dims.length, 8);
    for (let i = p.dims.length - 1; i >= 0; i--) b.addInt64(BigInt(p.dims[i]!));
    const dims = b.endVector();
    const bytes = new Uint8Array(p.values.buffer, p.values.byteOffset, p.values.byteLength);
    b.startVector(1, bytes.length, 16);
    for (let i = bytes.length - 1; i >= 0; i--) b.addInt8(bytes[i]!);
    const raw = b.endVector();
    b.startObject(7);
    b.addFieldOffset(TENSOR.name, name, 0);
    b.addFieldOffset(TENSOR.dims, dims, 0);
    b.addFieldInt32(TENSOR.dataType, DataType.FLOAT, null);
    b.addFieldOffset(TENSOR.rawData, raw, 0);
    return b.endObject();
  };
  const vectorOf = (offsets: number[]): number => {
    b.startVector(4, offsets.length, 4);
    for (let i = offsets.length - 1; i >= 0; i--) b.addOffset(offsets[i]!);
    return b.endVector();
  };
  const requiresGrad = vectorOf(trainable.map(tensor));
  const frozenParams = vectorOf(frozen.map(tensor));
  b.startObject(4);
  b.addFieldOffset(MODULE_STATE.requiresGradParams, requiresGrad, 0);
  b.addFieldOffset(MODULE_STATE.frozenParams, frozenParams, 0);
  const moduleState = b.endObject();
  b.startObject(4);
  b.addFieldInt32(CHECKPOINT.version, CHECKPOINT_VERSION, null);
  b.addFieldOffset(CHECKPOINT.moduleState, moduleState, 0);
  b.finish(b.endObject(), 'ODTC');
  return b.asUint8Array().slice();
}

/** Writes the four files into `dir` (created if missing) and returns what they hold. */
export function buildTrainingArtifacts(dir: string, options: TrainingArtifactsOptions = {}): TrainingArtifacts {
  const o = resolve(options);
  mkdirSync(dir, { recursive: true });
  const files = Object.fromEntries(Object.entries(ARTIFACT_FILES).map(([k, f]) => [k, path.resolve(dir, f)])) as TrainingArtifacts['files'];
  const parameters = initialParameters(o);
  writeFileSync(files.training, encodeModel(buildTrainingModel(o)));
  writeFileSync(files.eval, encodeModel(buildEvalModel(o)));
  writeFileSync(files.optimizer, encodeModel(buildOptimizerModel(o)));
  writeFileSync(files.checkpoint, encodeCheckpoint(parameters));
  return { dir: path.resolve(dir), files, vocab: o.vocab, dim: o.dim, classes: o.classes, learningRateScale: o.learningRateScale, parameters };
}

/** Copies the named files (default: all four) of an artifacts folder into `dest` (created if missing). */
export function copyArtifacts(src: string, dest: string, which: readonly (keyof typeof ARTIFACT_FILES)[] = ['training', 'eval', 'optimizer', 'checkpoint']): void {
  mkdirSync(dest, { recursive: true });
  for (const key of which) copyFileSync(path.join(src, ARTIFACT_FILES[key]), path.join(dest, ARTIFACT_FILES[key]));
}

export interface Batch {
  batch: number;
  sequence: number;
  /** input_ids [batch, sequence]. */
  ids: BigInt64Array;
  /** target [batch, sequence, classes]. */
  target: Float32Array;
}

/** A deterministic batch for a folder built with these options. */
export function makeBatch(artifacts: Pick<TrainingArtifacts, 'vocab' | 'classes'>, batch: number, sequence: number, seed = 5): Batch {
  const ids = BigInt64Array.from({ length: batch * sequence }, (_, i) => BigInt((i * 7 + seed) % artifacts.vocab));
  return { batch, sequence, ids, target: randomFloats(batch * sequence * artifacts.classes, seed + 100) };
}

export interface ReferenceStep {
  loss: number;
  /** Gradients in float64, keyed by parameter name. */
  gradients: Record<string, Float64Array>;
}

/**
 * The training model's loss and parameter gradients, in float64, from the embedding activation the
 * step actually used (the noisy one when patched) and the parameter values before the step.
 * Gradients w.r.t. the table reach it through the lookup unchanged (d noisy / d clean = I).
 */
export function referenceStep(artifacts: Pick<TrainingArtifacts, 'vocab' | 'dim' | 'classes'>, batch: Batch, activation: ArrayLike<number>, head: ArrayLike<number>): ReferenceStep {
  const { vocab, dim: D, classes: C } = artifacts;
  const tokens = batch.batch * batch.sequence;
  if (activation.length !== tokens * D) throw new Error(`activation has ${activation.length} values, expected ${tokens * D}`);
  const n = tokens * C;
  const dTable = new Float64Array(vocab * D);
  const dHead = new Float64Array(D * C);
  let loss = 0;
  for (let t = 0; t < tokens; t++) {
    const row = Number(batch.ids[t]!);
    for (let c = 0; c < C; c++) {
      let logit = 0;
      for (let k = 0; k < D; k++) logit += activation[t * D + k]! * head[k * C + c]!;
      const e = logit - batch.target[t * C + c]!;
      loss += e * e;
      const g = (2 * e) / n;
      for (let k = 0; k < D; k++) {
        dHead[k * C + c] += activation[t * D + k]! * g;
        dTable[row * D + k] += g * head[k * C + c]!;
      }
    }
  }
  return { loss: loss / n, gradients: { [EMBEDDING_TABLE]: dTable, [HEAD_WEIGHT]: dHead } };
}
