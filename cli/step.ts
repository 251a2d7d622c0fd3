/**
 * `neftune step`: writes the training-step graph of a forward model (buildTrainingStep) through the
 * same checked, atomic save as patch, and reports what a runner needs to wire it.
 */
import { dataTypeName } from '../src/graph/dtype.js';
import type { Graph, Value } from '../src/graph/ir.js';
import { RefusedError, checkExternalData, sameFile } from '../src/io/index.js';
import { TrainingOptionError, buildTrainingStep, type LossChoice, type TrainingStepOptions, type TrainingStepRecord } from '../src/training/index.js';
import { OnnxNeftuneError } from '../src/graph/errors.js';
import { invocationFailure, runFileCommand, type CliResult, type FileCommandOptions } from './commands.js';
import { checkModelPath } from './inputs.js';

import type { StepFlags } from './step-options.js';

/** `--padding-idx 0` or `--padding-idx wte.weight=0` (repeatable) as the library's paddingIdx. */
function paddingIdxOf(specs: readonly string[]): TrainingStepOptions['paddingIdx'] {
  const row = (text: string, spec: string) => {
    if (!/^-?\d+$/.test(text.trim())) throw new TrainingOptionError(`--padding-idx "${spec}": the row must be an integer (ROW or TABLE=ROW).`);
    return Number(text);
  };
  if (specs.length === 1 && !specs[0]!.includes('=')) return row(specs[0]!, specs[0]!);
  const byTable: Record<string, number> = Object.create(null);
  for (const spec of specs) {
    const at = spec.lastIndexOf('=');
    if (at <= 0) throw new TrainingOptionError(`--padding-idx "${spec}": with several rows, name each table as TABLE=ROW.`);
    byTable[spec.slice(0, at)] = row(spec.slice(at + 1), spec);
  }
  return byTable;
}

export type IoRole = 'data' | 'param' | 'state' | 'learning-rate' | 'step' | 'loss' | 'grad' | 'other';

export interface IoJson { name: string; role: IoRole; type: string | null; dims: Array<number | string | null> | null }

export interface StepSummary {
  loss: string;
  optimizer: 'sgd' | 'adamw';
  hyperparameters: Record<string, number>;
  learningRate: string;
  step: string | null;
  inputs: IoJson[];
  outputs: IoJson[];
  params: { count: number; elements: number; list: Array<{ input: string; output: string; grad: string | null; elements: number }> };
  frozen: { count: number; elements: number; names: string[] };
  state: TrainingStepRecord['state'];
  runtimeShapeFallbacks: number;
  nodes: { forward: number; step: number };
  /** The metadata record as written (`onnx_neftune.training_step`), fields the summary does not know included. */
  record: TrainingStepRecord;
}

function elementsOf(v: Value | undefined): number {
  const dims = v?.initializer?.dims ?? v?.shape;
  return dims && dims.every((d) => typeof d === 'number') ? (dims as number[]).reduce((a, b) => a * b, 1) : 0;
}

function ioJson(v: Value, role: IoRole): IoJson {
  const elem = v.elemType;
  return { name: v.name, role, type: elem === undefined ? null : dataTypeName(elem), dims: v.shape?.map((d) => d ?? null) ?? null };
}

export function summarizeStep(record: TrainingStepRecord, graph: Graph, forwardNodes: number, forwardGraph: Graph): StepSummary {
  const roles = new Map<string, IoRole>([[record.learningRate, 'learning-rate'], [record.loss, 'loss']]);
  if (record.step) roles.set(record.step, 'step');
  for (const p of record.params) { roles.set(p.input, 'param'); roles.set(p.output, 'param'); if (p.grad) roles.set(p.grad, 'grad'); }
  for (const s of record.state) { roles.set(s.input, 'state'); roles.set(s.output, 'state'); }
  const frozen = record.frozen.map((name) => elementsOf(graph.initializer(name)));
  const params = record.params.map((p) => ({ input: p.input, output: p.output, grad: p.grad ?? null, elements: elementsOf(forwardGraph.lookup(p.input)) }));
  return {
    loss: record.loss, optimizer: record.optimizer, hyperparameters: record.hyperparameters,
    learningRate: record.learningRate, step: record.step ?? null,
    inputs: graph.inputs.map((v) => ioJson(v, roles.get(v.name) ?? 'data')),
    outputs: graph.outputs.map((v) => ioJson(v, roles.get(v.name) ?? 'other')),
    params: { count: params.length, elements: params.reduce((a, p) => a + p.elements, 0), list: params },
    frozen: { count: frozen.length, elements: frozen.reduce((a, b) => a + b, 0), names: record.frozen },
    state: record.state, runtimeShapeFallbacks: record.runtimeShapeFallbacks,
    nodes: { forward: forwardNodes, step: graph.nodeCount },
    record,
  };
}

export function stepOptionsFromFlags(flags: StepFlags): TrainingStepOptions {
  return {
    optimizer: flags.optimizer ?? 'adamw',
    ...(flags.loss !== undefined ? { loss: flags.loss as LossChoice } : {}),
    ...(flags.params?.length ? { params: flags.params } : {}),
    ...(flags.momentum !== undefined ? { momentum: flags.momentum } : {}),
    ...(flags.weightDecay !== undefined ? { weightDecay: flags.weightDecay } : {}),
    ...(flags.gradients ? { gradients: true } : {}),
    ...(flags.paddingIdx?.length ? { paddingIdx: paddingIdxOf(flags.paddingIdx) } : {}),
    ...(flags.ignoreIndex !== undefined ? { ignoreIndex: flags.ignoreIndex } : {}),
  };
}

/**
 * Builds and writes the step graph. Trainable parameters become plain graph inputs (their initial
 * values stay in the source model); frozen ones stay initializers, in the file or in the external
 * data files they were in, which the save references or copies beside the output as for patch.
 */
export function stepCommand(input: string, flags: StepFlags, options: Omit<FileCommandOptions, 'inPlace' | 'dryRun'>): Promise<CliResult> {
  try {
    checkModelPath(input, 'step');
  } catch (error) {
    if (error instanceof OnnxNeftuneError) return Promise.resolve(invocationFailure('step', error));
    throw error;
  }
  // AdamW has no momentum option (its betas are fixed): a given --momentum would do nothing.
  if (flags.momentum !== undefined && (flags.optimizer ?? 'adamw') !== 'sgd') {
    return Promise.resolve(invocationFailure('step', new TrainingOptionError('--momentum is an SGD option and does nothing with --optimizer adamw (the default). Add --optimizer sgd, or leave --momentum out.')));
  }
  const training = stepOptionsFromFlags(flags);
  return runFileCommand('step', [input], { ...options, inPlace: false, dryRun: false }, (loaded, job) => {
    // Trainable weights leave the step graph (they become inputs): over the forward model they would be lost.
    if (loaded.path && job.output && job.output !== '-' && sameFile(loaded.path, job.output)) {
      throw new RefusedError(`Refusing to write the step graph over its forward model ${loaded.path}: the step graph takes the trainable weights as inputs, so they would be lost. Choose another output.`);
    }
    const forward = loaded.model;
    const built = buildTrainingStep(forward, training);
    const summary = summarizeStep(built.record, built.model.graph, forward.graph.nodeCount, forward.graph);
    loaded.model = built.model;
    // Only the data files the step graph still reads (its frozen weights) go along.
    loaded.externalData = loaded.externalData.length ? checkExternalData(built.model, loaded.dir) : [];
    const s = summary;
    return {
      status: 'built', warnings: [], sites: [], write: true, step: summary,
      message: `training step (${s.optimizer}, loss ${s.loss}): ${s.params.count} parameter${s.params.count === 1 ? '' : 's'} (${s.params.elements} elements), ${s.frozen.count} frozen, ${s.state.length} state tensor${s.state.length === 1 ? '' : 's'}, ${s.nodes.step} nodes (forward ${s.nodes.forward})`,
    };
  });
}
