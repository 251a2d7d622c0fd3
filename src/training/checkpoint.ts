/**
 * A training checkpoint as plain data (browser-safe): parameters and optimizer state as ONNX
 * tensors, with what a resumed run needs to continue exactly (update count, schedules, seed, data
 * position). On disk it is an ONNX model holding the tensors as initializers (a checkpoint opens in
 * any ONNX tool) plus a small JSON; src/io/checkpoint-files.ts writes and reads the directory.
 */
import { DataType, dataTypeName } from '../graph/dtype.js';
import { OnnxNeftuneError } from '../graph/errors.js';
import { Graph, Model, Value } from '../graph/ir.js';
import { Tensor } from '../graph/tensor.js';
import type { AlphaSchedule, LearningRateSchedule } from './schedules.js';
import type { TrainingStepRecord } from './step.js';

export const CHECKPOINT_FORMAT = 'onnx-neftune-checkpoint';
export const CHECKPOINT_METADATA_KEY = 'onnx_neftune.checkpoint';

export interface CheckpointInfo {
  format: typeof CHECKPOINT_FORMAT;
  version: 1;
  /** Updates done. */
  step: number;
  seed: number;
  schedule: LearningRateSchedule;
  alpha: AlphaSchedule | null;
  gradientAccumulation: number;
  optimizer: TrainingStepRecord['optimizer'];
  hyperparameters: Record<string, number>;
  /** Graph input names of the parameters and of the optimizer state, in the step record's order. */
  params: string[];
  state: string[];
  /** Where the data loader is (opaque to the trainer: given to checkpoint(), handed back on resume). */
  dataPosition: unknown;
}

export interface TrainingCheckpoint {
  info: CheckpointInfo;
  /** Parameters and optimizer state, named as the step graph's inputs. */
  tensors: Tensor[];
}

/** A checkpoint file that is not one, or is damaged. */
export class CheckpointFormatError extends OnnxNeftuneError {
  constructor(message: string) { super('ONNX_MODEL', message); }
}

/** A readable checkpoint that does not fit the step graph: every difference is listed. */
export class CheckpointMismatchError extends OnnxNeftuneError {
  constructor(message: string, readonly problems: readonly string[]) { super('BAD_OPTION', message); }
}

/** The checkpoint as an ONNX model: an empty graph whose initializers are the tensors; the info in its metadata too. */
export function checkpointToModel(checkpoint: TrainingCheckpoint): Model {
  const graph = new Graph({ name: 'checkpoint' });
  for (const t of checkpoint.tensors) graph.addInitializer(new Value(t.name!), t);
  // `graph` present: the encoder otherwise leaves out a graph without nodes or inputs.
  const model = new Model({ ir_version: 8, opset_import: [{ domain: '', version: 17 }], producer_name: 'onnx-neftune', graph: {} }, graph);
  model.metadata.set(CHECKPOINT_METADATA_KEY, JSON.stringify(checkpoint.info));
  return model;
}

/** Reads a checkpoint model (payloads must be loaded); `infoText` is the JSON written beside it, checked against the model's copy. */
export function checkpointFromModel(model: Model, infoText?: string): TrainingCheckpoint {
  const inModel = model.metadata.get(CHECKPOINT_METADATA_KEY);
  if (inModel === undefined) throw new CheckpointFormatError(`This model is not an onnx-neftune checkpoint (no "${CHECKPOINT_METADATA_KEY}" metadata). Resume from a directory the trainer wrote.`);
  if (infoText !== undefined && infoText.trim() !== inModel) throw new CheckpointFormatError('The checkpoint JSON and the checkpoint model disagree (a file was replaced or damaged). Resume from an earlier checkpoint.');
  let info: CheckpointInfo;
  try { info = JSON.parse(inModel) as CheckpointInfo; } catch { throw new CheckpointFormatError('The checkpoint info is not valid JSON; the checkpoint is damaged. Resume from an earlier checkpoint.'); }
  if (info?.format !== CHECKPOINT_FORMAT || info.version !== 1 || !Number.isInteger(info.step) || !Array.isArray(info.params) || !Array.isArray(info.state)) {
    throw new CheckpointFormatError(`The checkpoint info is not a version-1 ${CHECKPOINT_FORMAT} record; it was written by another tool or version.`);
  }
  // Names live on the graph's values; a decoded tensor need not carry its own.
  const tensors = model.graph.initializers.map((v) => (v.initializer!.name === v.name ? v.initializer! : new Tensor({ ...v.initializer!.proto, name: v.name })));
  const have = new Set(tensors.map((t) => t.name));
  const missing = [...info.params, ...info.state].filter((n) => !have.has(n));
  if (missing.length) throw new CheckpointFormatError(`The checkpoint lists tensors it does not hold: ${missing.slice(0, 10).join(', ')}. It is damaged; resume from an earlier checkpoint.`);
  return { info, tensors };
}

export interface ExpectedTensor { name: string; dataType: DataType; dims: readonly number[] }

/** Throws CheckpointMismatchError listing every name, dtype and shape that does not fit `expected`. */
export function checkCheckpointFits(checkpoint: TrainingCheckpoint, expected: readonly ExpectedTensor[], optimizer: string): void {
  const problems: string[] = [];
  if (checkpoint.info.optimizer !== optimizer) problems.push(`optimizer: the checkpoint is from ${checkpoint.info.optimizer}, the step graph uses ${optimizer}`);
  const byName = new Map(checkpoint.tensors.map((t) => [t.name!, t]));
  for (const e of expected) {
    const t = byName.get(e.name);
    byName.delete(e.name);
    if (!t) { problems.push(`${e.name}: missing from the checkpoint`); continue; }
    if (t.dataType !== e.dataType) problems.push(`${e.name}: ${dataTypeName(t.dataType)} in the checkpoint, ${dataTypeName(e.dataType)} in the step graph`);
    else if (t.dims.join(',') !== e.dims.join(',')) problems.push(`${e.name}: shape [${t.dims.join(', ')}] in the checkpoint, [${e.dims.join(', ')}] in the step graph`);
  }
  for (const name of byName.keys()) problems.push(`${name}: in the checkpoint, not an input of the step graph`);
  if (problems.length) {
    throw new CheckpointMismatchError(`The checkpoint does not fit this training step (${problems.length} difference${problems.length > 1 ? 's' : ''}): ${problems.slice(0, 8).join('; ')}${problems.length > 8 ? '; ...' : ''}. Resume with the model, parameters and optimizer the checkpoint was made with.`, problems);
  }
}
