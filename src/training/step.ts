/**
 * One training step as a plain ONNX graph: forward, loss, backward and an in-graph optimizer
 * update. Parameters and optimizer state come in as graph inputs and leave as `<name>.new`
 * outputs; a metadata entry lists the pairs so a runner can feed each output back as the next
 * step's input. Runs on any ONNX Runtime build (no training ops).
 */
import { DataType, dataTypeName } from '../graph/dtype.js';
import { attr, makeAttribute, tensorType } from '../graph/builder.js';
import { ErrorMessage, OnnxNeftuneError, errorMessage, optionName } from '../graph/errors.js';
import { Node, Value, type Graph, type Model } from '../graph/ir.js';
import { NameAllocator } from '../graph/names.js';
import { Tensor } from '../graph/tensor.js';
import { findEmbeddings } from '../passes/embeddings.js';
import { TrainingOptionError } from './errors.js';
import { Emitter, checkTrainingOpset, emitGradients, oneHotAs, parameterToInput, planGradients, type GatherGradientForm, type GradientOptions } from './gradients.js';
import { inferShapes, type ShapeTable } from './shapes.js';

export const TRAINING_STEP_METADATA_KEY = 'onnx_neftune.training_step';

/**
 * `auto`: a scalar float output if the graph has exactly one, else `causal-lm`.
 * `causal-lm`: logits at i against input_ids at i + 1, attention_mask padding left out.
 * `causal-lm:NAME`: logits at i against labels input NAME at i + 1 (Hugging Face causal-LM trainers).
 * `labels:NAME`: logits at i against labels input NAME at i: token classification (logits [B, L, C],
 * labels [B, L]) or sequence classification (logits [B, C], labels [B]).
 * Labels equal to `ignoreIndex` are left out; the mean is over the positions counted.
 */
export type LossChoice = 'auto' | 'causal-lm' | `causal-lm:${string}` | `output:${string}` | `labels:${string}`;

/** Hugging Face's label for positions that do not count (prompt tokens, padding). */
export const DEFAULT_IGNORE_INDEX = -100;

export interface TrainingStepOptions extends GradientOptions {
  loss?: LossChoice;
  /** Label value left out of `labels:` and `causal-lm:` losses (default -100). */
  ignoreIndex?: number;
  optimizer: 'sgd' | 'adamw';
  /** SGD momentum (0: plain SGD, no state). */
  momentum?: number;
  /** SGD: L2 added to the gradient (default 0); AdamW: decoupled decay (default 0.01). */
  weightDecay?: number;
  beta1?: number;
  beta2?: number;
  epsilon?: number;
  /** Also output each parameter's gradient as `<name>.grad`. */
  gradients?: boolean;
  /** Further values to expose as graph outputs (for checks), by name. */
  extraOutputs?: readonly string[];
}

export interface StatePair { input: string; output: string }

export interface TrainingStepRecord {
  version: 1;
  loss: string;
  optimizer: 'sgd' | 'adamw';
  hyperparameters: Record<string, number>;
  learningRate: string;
  /** 1-based step number input (AdamW bias correction); absent for SGD. */
  step?: string;
  /**
   * Mixed precision: a float16/bfloat16 parameter is trained as a float32 master weight (`masterWeights`;
   * its input, output, gradient and optimizer state are float32), which the forward reads cast to `dtype`.
   */
  params: Array<StatePair & { grad?: string; masterWeights?: 'float32'; dtype?: 'float16' | 'bfloat16' }>;
  /** Optimizer state, zero-initialized before the first step. */
  state: Array<StatePair & { param: string; kind: 'momentum' | 'exp_avg' | 'exp_avg_sq' }>;
  /** Float initializers the step reads but does not train (single-element constants included). */
  frozen: string[];
  /** Graph inputs of the data a runner feeds (everything but parameters, state, learning rate and step). */
  inputs: string[];
  /** The forward model's inputs the step no longer reads (its nodes were pruned), removed from the graph: do not feed them. */
  droppedInputs: string[];
  runtimeShapeFallbacks: number;
  /** How Gather table gradients are computed: ScatterND add from opset 16, else the one-hot MatMul form. */
  gatherGradient: GatherGradientForm;
  /** Positions an appended cross-entropy counts: logits at i against labels at i + 1 (`next-token`) or at i (`per-position`); absent for a loss output of the model. */
  lossTargets?: 'next-token' | 'per-position';
  /** paddingIdx as applied: table -> row whose lookups get no gradient. */
  paddingRows?: Record<string, number>;
}

export interface TrainingStep {
  model: Model;
  record: TrainingStepRecord;
}

const INT64_MAX = 9223372036854775807n;

/** Builds the step graph from a copy of `model` (the model itself is not changed). */
export function buildTrainingStep(source: Model, options: TrainingStepOptions): TrainingStep {
  if (options.optimizer !== 'sgd' && options.optimizer !== 'adamw') throw new TrainingOptionError(errorMessage`Unknown optimizer "${String(options.optimizer)}"; ${optionName('optimizer')} takes "sgd" or "adamw".`);
  const ignoreIndex = options.ignoreIndex ?? DEFAULT_IGNORE_INDEX;
  if (!Number.isInteger(ignoreIndex)) throw new TrainingOptionError(errorMessage`${optionName('ignoreIndex')} must be an integer, got ${ignoreIndex}.`);
  const adam = options.optimizer === 'adamw';
  const momentum = options.momentum ?? 0;
  const wd = options.weightDecay ?? (adam ? 0.01 : 0);
  const b1 = options.beta1 ?? 0.9, b2 = options.beta2 ?? 0.999, eps = options.epsilon ?? 1e-8;
  const hyperparameters: Record<string, number> = adam ? { beta1: b1, beta2: b2, epsilon: eps, weightDecay: wd } : { momentum, weightDecay: wd };
  for (const [k, v] of Object.entries(hyperparameters)) if (!Number.isFinite(v) || v < 0) throw new TrainingOptionError(errorMessage`${optionName(k)} must be a finite non-negative number, got ${v}.`);
  // Model-level refusals come before the loss is chosen, so the first error names the real reason.
  const opset = checkTrainingOpset(source);
  const model = source.clone();
  const graph = model.graph;
  const names = new NameAllocator(model);
  const forwardInputs = [...graph.inputs];
  const shapes0 = inferShapes(graph, opset);
  const ownOutputs = new Set(graph.outputs.map((o) => o.name));
  const lossName = chooseLoss(model, shapes0, options.loss ?? 'auto', names, opset, ignoreIndex);
  const lossTargets = ownOutputs.has(lossName) ? undefined : (options.loss ?? '').startsWith('labels:') ? 'per-position' as const : 'next-token' as const;

  const gradientOptions = { ...(options.params ? { params: options.params } : {}), ...(options.paddingIdx !== undefined ? { paddingIdx: options.paddingIdx } : {}) };
  let plan = planGradients(model, lossName, gradientOptions);
  const masters = useFloat32Masters(graph, plan.params, plan.shapes, names);
  if (masters.size) plan = planGradients(model, lossName, { ...gradientOptions, params: plan.params.map((p) => p.name) });
  const result = emitGradients(model, plan, names);
  const { shapes } = plan;
  const e = new Emitter(graph, names, opset, shapes);

  const floatInput = (base: string, elem: DataType, dims: number[] = []): Value => {
    const v = new Value(names.fresh(base));
    v.info = { name: v.name, type: tensorType(elem, dims) };
    return graph.addInput(v);
  };
  const lr = floatInput('learning_rate', DataType.FLOAT);
  const step = adam ? floatInput('step', DataType.INT64) : undefined;

  const perElem = new Map<DataType, { lr: Value; bc1?: Value; bc2?: Value }>();
  const scalars = (elem: DataType) => {
    let s = perElem.get(elem);
    if (!s) {
      s = { lr: elem === DataType.FLOAT ? lr : e.op('Cast', [lr], { to: attr.int(elem) }) };
      if (step) {
        const t = e.op('Cast', [step], { to: attr.int(elem) });
        s.bc1 = e.op('Sub', [e.scalar(1, elem), e.op('Pow', [e.scalar(b1, elem), t])]);
        s.bc2 = e.op('Sub', [e.scalar(1, elem), e.op('Pow', [e.scalar(b2, elem), t])]);
      }
      perElem.set(elem, s);
    }
    return s;
  };

  const outputs: Value[] = [];
  const output = (v: Value, base: string, like: Value): string => {
    // Outputs get the requested name through an Identity, so gradient values keep their own names.
    const out = e.op('Identity', [v]);
    out.name = names.fresh(base);
    const info = shapes.info(like);
    out.info = { name: out.name, type: tensorType(info.elem ?? DataType.FLOAT, info.dims) };
    outputs.push(out);
    return out.name;
  };

  const record: TrainingStepRecord = {
    version: 1, loss: lossName, optimizer: options.optimizer, hyperparameters, learningRate: lr.name,
    ...(step ? { step: step.name } : {}), params: [], state: [], frozen: [], inputs: [], droppedInputs: [], runtimeShapeFallbacks: result.runtimeShapeFallbacks,
    gatherGradient: result.gatherGradient,
    ...(lossTargets ? { lossTargets } : {}),
    ...(plan.paddingRows.size ? { paddingRows: Object.fromEntries([...plan.paddingRows].map(([t, row]) => [t.name, row])) } : {}),
  };
  const newParams: Array<[Value, Value]> = [];
  const newState: Array<[Value, string, Value, 'momentum' | 'exp_avg' | 'exp_avg_sq']> = [];
  for (const p of result.params) {
    parameterToInput(graph, p, shapes);
    const info = shapes.info(p);
    const elem = info.elem!;
    const dims = info.dims as number[];
    const gp = result.gradients.get(p)!;
    const s = scalars(elem);
    const state = (kind: 'momentum' | 'exp_avg' | 'exp_avg_sq') => floatInput(`${p.name}.${kind}`, elem, dims);
    let updated: Value;
    if (!adam) {
      let g = gp;
      if (wd) g = e.op('Add', [g, e.op('Mul', [p, e.scalar(wd, elem)])]);
      if (momentum) {
        const v = state('momentum');
        const v2 = e.op('Add', [e.op('Mul', [v, e.scalar(momentum, elem)]), g]);
        newState.push([v2, v.name, p, 'momentum']);
        g = v2;
      }
      updated = e.op('Sub', [p, e.op('Mul', [g, s.lr])]);
    } else {
      const m = state('exp_avg'), v = state('exp_avg_sq');
      const m2 = e.op('Add', [e.op('Mul', [m, e.scalar(b1, elem)]), e.op('Mul', [gp, e.scalar(1 - b1, elem)])]);
      const v2 = e.op('Add', [e.op('Mul', [v, e.scalar(b2, elem)]), e.op('Mul', [e.op('Mul', [gp, gp]), e.scalar(1 - b2, elem)])]);
      newState.push([m2, m.name, p, 'exp_avg'], [v2, v.name, p, 'exp_avg_sq']);
      const denom = e.op('Add', [e.op('Sqrt', [e.op('Div', [v2, s.bc2!])]), e.scalar(eps, elem)]);
      const stepDir = e.op('Div', [e.op('Div', [m2, s.bc1!]), denom]);
      const decayed = wd ? e.op('Mul', [p, e.op('Sub', [e.scalar(1, elem), e.op('Mul', [s.lr, e.scalar(wd, elem)])])]) : p;
      updated = e.op('Sub', [decayed, e.op('Mul', [s.lr, stepDir])]);
    }
    newParams.push([updated, p]);
  }

  // Outputs: loss, parameters, state, gradients, extras; the forward's own outputs are dropped.
  while (graph.outputs.length) graph.removeOutput(graph.outputs.length - 1);
  const lossInfo = shapes.info(result.loss);
  result.loss.info = { name: result.loss.name, type: tensorType(lossInfo.elem!, lossInfo.dims) };
  graph.addOutput(result.loss);
  for (const [v, p] of newParams) {
    const dtype = masters.get(p.name);
    record.params.push({ input: p.name, output: output(v, `${p.name}.new`, p), ...(dtype ? { masterWeights: 'float32' as const, dtype: HALF_NAMES[dtype]! } : {}) });
  }
  for (const [v, input, p, kind] of newState) record.state.push({ input, output: output(v, `${input}.new`, p), param: p.name, kind });
  if (options.gradients) for (const p of result.params) record.params.find((r) => r.input === p.name)!.grad = output(result.gradients.get(p)!, `${p.name}.grad`, p);
  for (const name of options.extraOutputs ?? []) {
    const v = graph.lookup(name);
    if (!v) throw new TrainingOptionError(errorMessage`${optionName('extraOutputs')}: the model has no value named "${name}".`);
    output(v, `${name}.out`, v);
  }
  for (const o of outputs) graph.addOutput(o);
  const stepInputs = new Set([lr.name, ...(step ? [step.name] : []), ...record.params.map((p) => p.input), ...record.state.map((s) => s.input)]);
  record.droppedInputs = pruneUnreadNodes(graph, forwardInputs);
  record.inputs = graph.inputs.filter((v) => !stepInputs.has(v.name)).map((v) => v.name);
  record.frozen = graph.initializers.filter((v) => shapes.isFloat(v) && !result.params.includes(v) && v.uses.length > 0).map((v) => v.name);
  model.metadata.set(TRAINING_STEP_METADATA_KEY, JSON.stringify(record));
  return { model, record };
}

const HALF_NAMES: Partial<Record<DataType, 'float16' | 'bfloat16'>> = { [DataType.FLOAT16]: 'float16', [DataType.BFLOAT16]: 'bfloat16' };

/**
 * Mixed precision, as serious trainers do it: each float16/bfloat16 parameter becomes a float32 graph
 * input (the master weight) that the forward reads cast to its own dtype, so the gradient reaching
 * it, its accumulation and the optimizer run in float32 (ONNX Runtime's CPU EP has no float16
 * ScatterND add and little bfloat16 arithmetic). A table lookup gathers float32 rows and casts them
 * (the same values as casting the table first), so its gradient is scattered in float32 too.
 * Returns parameter name -> the model's dtype.
 */
function useFloat32Masters(graph: Graph, params: readonly Value[], shapes: ShapeTable, names: NameAllocator): Map<string, DataType> {
  const masters = new Map<string, DataType>();
  const cast = (input: Value, output: Value, to: DataType) => new Node('Cast', [input], [output], { name: names.fresh(`${output.name}_Cast`), attributes: [makeAttribute('to', attr.int(to))] });
  for (const p of params) {
    const dtype = shapes.elem(p);
    if (dtype === undefined || !HALF_NAMES[dtype]) continue;
    if (graph.initializers.includes(p)) graph.initializerToInput(p);
    p.info = { name: p.name, type: tensorType(DataType.FLOAT, shapes.dims(p) ?? []) };
    let half: Value | undefined;
    for (const node of p.consumers()) {
      if (node.opType === 'Gather' && node.graph === graph && node.inputs.indexOf(p) === 0 && node.inputs.lastIndexOf(p) === 0) {
        const rows = node.outputs[0]!;
        const rows32 = new Value(names.fresh(`${rows.name}.float32`));
        node.replaceOutput(0, rows32);
        graph.insertAfter(node, cast(rows32, rows, dtype));
        continue;
      }
      if (!half) {
        half = new Value(names.fresh(`${p.name}.${HALF_NAMES[dtype]}`));
        graph.prepend(cast(p, half, dtype));
      }
      node.inputs.forEach((v, i) => { if (v === p) node.replaceInput(i, half!); });
    }
    masters.set(p.name, dtype);
  }
  return masters;
}

/**
 * Removes nodes no graph output needs (a training artifact's own gradient ops, the forward outputs
 * the step dropped), then initializers nothing reads and those of `forwardInputs` nothing reads.
 * Returns the removed inputs' names: a runner feeds `record.inputs`, ORT refuses unknown feeds.
 */
function pruneUnreadNodes(graph: Graph, forwardInputs: readonly Value[]): string[] {
  const read = (v: Value) => v.uses.length > 0 || v.outputOf().length > 0;
  const nodes = [...graph.nodes];
  // Nodes are in topological order (planned, then appended): one reverse sweep frees whole chains.
  for (let k = nodes.length - 1; k >= 0; k--) if (!nodes[k]!.outputs.some((o) => o && read(o))) graph.remove(nodes[k]!);
  for (const v of [...graph.initializers]) if (!read(v) && !graph.inputs.includes(v)) graph.removeInitializer(v);
  const dropped = forwardInputs.filter((v) => graph.inputs.includes(v) && !read(v));
  for (const v of dropped) graph.removeInput(v);
  return dropped.map((v) => v.name);
}

function chooseLoss(model: Model, shapes: ShapeTable, choice: LossChoice, names: NameAllocator, opset: number, ignoreIndex: number): string {
  if (choice.startsWith('output:')) return choice.slice('output:'.length);
  for (const [prefix, shift] of [['labels:', false], ['causal-lm:', true]] as const) {
    if (!choice.startsWith(prefix)) continue;
    const name = choice.slice(prefix.length);
    if (!name) throw new TrainingOptionError(errorMessage`${optionName('loss')} "${choice}" names no labels input; write "${prefix}labels".`);
    return appendLabelsLoss(model, shapes, names, opset, { labels: name, shift, ignoreIndex });
  }
  if (choice === 'auto') {
    const scalars = scalarOutputs(model, shapes);
    if (scalars.length === 1) return scalars[0]!.name;
    if (scalars.length > 1) throw new TrainingOptionError(errorMessage`The model has ${scalars.length} scalar float outputs (${scalars.map((o) => o.name).join(', ')}); choose the loss with ${optionName('loss')} "output:NAME".`);
  } else if (choice !== 'causal-lm') {
    throw new TrainingOptionError(errorMessage`Unknown loss "${String(choice)}"; ${optionName('loss')} takes "auto", "causal-lm", "causal-lm:NAME", "output:NAME" or "labels:NAME".`);
  }
  return appendCausalLmLoss(model, shapes, names, opset);
}

const scalarOutputs = (model: Model, shapes: ShapeTable): Value[] =>
  model.graph.outputs.filter((o) => shapes.isFloat(o) && shapes.dims(o) !== undefined && shapes.dims(o)!.every((d) => d === 1));

/** The start of a "no loss" message: true about the model's scalar float outputs. */
function noLoss(model: Model, shapes: ShapeTable, needs: string): ErrorMessage {
  return scalarOutputs(model, shapes).length ? errorMessage`No loss to train: ${needs}` : errorMessage`No loss to train: the model has no scalar float output, and ${needs}`;
}

/**
 * The end of a "no loss" message: the other losses, or what training each scalar float output would
 * do; one that nothing trainable reaches is no way out, and the message says why.
 */
function lossAlternatives(model: Model, shapes: ShapeTable): ErrorMessage {
  const scalars = scalarOutputs(model, shapes);
  if (!scalars.length) return errorMessage`${otherLosses()}.`;
  return joinMessages(scalars.map((o) => {
    try {
      planGradients(model.clone(), o.name);
      return errorMessage`The model has a scalar float output "${o.name}": ${optionName('loss')} "output:${o.name}" trains against it.`;
    } catch (error) {
      return errorMessage`The model's scalar float output "${o.name}" cannot be the loss either: ${error instanceof OnnxNeftuneError ? error.text : String(error)}`;
    }
  }), ' ');
}

function joinMessages(parts: readonly ErrorMessage[], separator: string): ErrorMessage {
  return new ErrorMessage(parts.flatMap((p, i) => (i ? [separator, ...p.parts] : [...p.parts])));
}

const dimsText = (shapes: ShapeTable, v: Value) => `[${(shapes.dims(v) ?? []).map((d) => d ?? '?').join(', ')}]`;
const otherLosses = (): ErrorMessage => errorMessage`Choose the loss with ${optionName('loss')}: "output:NAME" for a scalar output, "labels:NAME" against a labels input`;

/**
 * The logits a cross-entropy loss reads. Next-token losses (`vocab`): the float output `logits` of
 * rank 3, else the one rank-3 float output whose last dim is the token-embedding table's row count,
 * so an output of hidden states or embeddings is never taken for logits. Classification: `logits`
 * of rank 2 or 3, else the one float output of rank 2 or 3.
 */
function findLogits(model: Model, shapes: ShapeTable, needs: string, vocab: boolean): Value {
  const ranks = vocab ? [3] : [2, 3];
  const candidates = model.graph.outputs.filter((o) => shapes.isFloat(o) && ranks.includes(shapes.rank(o) ?? -1));
  const named = candidates.find((o) => o.name === 'logits');
  if (named) return named;
  const shape = vocab ? '[batch, sequence, vocab]' : '[batch, classes] or [batch, sequence, classes]';
  const listed = candidates.map((o) => `${o.name} ${dimsText(shapes, o)}`).join(', ');
  if (!vocab) {
    if (candidates.length === 1) return candidates[0]!;
    throw new TrainingOptionError(errorMessage`${noLoss(model, shapes, needs)} needs a float output "logits" ${shape}${candidates.length ? `; it has several candidates (${listed})` : ''}. ${lossAlternatives(model, shapes)}`);
  }
  const report = findEmbeddings(model);
  const rows = new Set((report.defaultTarget.length ? report.defaultTarget : report.candidates).map((c) => c.table.rows).filter((r): r is number => r !== undefined));
  const matching = candidates.filter((o) => rows.has(shapes.dims(o)![2] as number));
  if (matching.length === 1) return matching[0]!;
  const why = !candidates.length ? 'it has no rank-3 float output'
    : !rows.size ? `the vocabulary size is unknown (no token-embedding table to compare with), so none of ${listed} can be told to be logits`
    : matching.length ? `several rank-3 outputs end in the vocabulary size ${[...rows].join(' or ')} (${matching.map((o) => o.name).join(', ')})`
    : `no rank-3 output ends in the vocabulary size (the token-embedding table has ${[...rows].join(' or ')} rows; candidates: ${listed})`;
  throw new TrainingOptionError(errorMessage`${noLoss(model, shapes, needs)} needs logits ${shape}: an output named "logits", or the one rank-3 float output whose last dim is the vocabulary size; ${why}. ${lossAlternatives(model, shapes)}`);
}

const next = (e: Emitter, x: Value) => e.op('Slice', [x, e.ints([1]), e.constant(Tensor.fromArray(DataType.INT64, [1], BigInt64Array.from([INT64_MAX]))), e.ints([1])]);

/**
 * Mean cross-entropy of `logits` [B, L, V] (shifted: positions 0..L-2) against int64 `targets` [B, L]; with `weight` (0/1 per
 * position, logits' element type) the sum over counted positions divided by their count, 0 when none counts.
 */
function crossEntropy(e: Emitter, model: { logits: Value; shifted: boolean }, targets: Value, weight: Value | undefined, names: NameAllocator): string {
  const elem = e.s.elem(model.logits)!;
  const rank = e.s.rank(model.logits)!;
  const vocab = e.s.dims(model.logits)![rank - 1];
  const depth = typeof vocab === 'number' ? e.ints([vocab]) : e.op('Slice', [e.op('Shape', [model.logits]), e.ints([rank - 1]), e.ints([rank])]);
  // Mean over every position: [batch] or [batch, sequence].
  const positions = Array.from({ length: rank - 1 }, (_, i) => i);
  const logits = model.shifted ? e.op('Slice', [model.logits, e.ints([0]), e.ints([-1]), e.ints([1])], {}, 'shifted_logits') : model.logits;
  const logp = e.op('LogSoftmax', [logits], { axis: attr.int(-1) });
  const nll = e.op('Neg', [e.reduce('ReduceSum', e.op('Mul', [logp, oneHotAs(e, targets, depth, elem)]), [-1], false)]);
  let lossValue: Value;
  if (weight) {
    const total = e.reduce('ReduceSum', e.op('Mul', [nll, weight]), positions, false);
    const count = e.op('Max', [e.reduce('ReduceSum', weight, positions, false), e.scalar(1, elem)]);
    lossValue = e.op('Div', [total, count]);
  } else {
    lossValue = e.reduce('ReduceMean', nll, positions, false);
  }
  const out = e.op('Identity', [lossValue]);
  out.name = names.has('loss') ? names.fresh('loss') : (names.add('loss'), 'loss');
  out.info = { name: out.name, type: tensorType(elem, []) };
  return out.name;
}

/**
 * Mean next-token cross-entropy: logits [B, L, V] at positions 0..L-2 against input_ids at 1..L-1,
 * positions whose target is padding (attention_mask 0) left out.
 */
function appendCausalLmLoss(model: Model, shapes: ShapeTable, names: NameAllocator, opset: number): string {
  const graph = model.graph;
  const ids = graph.inputs.find((v) => v.name === 'input_ids');
  if (!ids) throw new TrainingOptionError(errorMessage`${noLoss(model, shapes, 'causal-LM loss')} needs an "input_ids" graph input (or a labels input: "causal-lm:NAME"). ${lossAlternatives(model, shapes)}`);
  const logits = findLogits(model, shapes, 'causal-LM loss', true);
  const mask = graph.inputs.find((v) => v.name === 'attention_mask');
  const e = new Emitter(graph, names, opset, shapes);
  const weight = mask ? e.op('Cast', [next(e, mask)], { to: attr.int(shapes.elem(logits)!) }) : undefined;
  return crossEntropy(e, { logits, shifted: true }, next(e, ids), weight, names);
}

/**
 * Cross-entropy against an integer labels input [B, L] (added as a graph input when the model has
 * none), unshifted or next-token (`shift`), labels equal to `ignoreIndex` left out.
 */
function appendLabelsLoss(model: Model, shapes: ShapeTable, names: NameAllocator, opset: number, o: { labels: string; shift: boolean; ignoreIndex: number }): string {
  const graph = model.graph;
  const kind = `${o.shift ? 'causal-lm' : 'labels'}:${o.labels} loss`;
  const logits = findLogits(model, shapes, kind, o.shift);
  const labelDims = shapes.dims(logits)!.slice(0, -1);
  const labelShape = labelDims.length === 1 ? '[batch]' : '[batch, sequence]';
  let labels = graph.inputs.find((v) => v.name === o.labels);
  if (!labels) {
    if (names.has(o.labels)) throw new TrainingOptionError(errorMessage`${kind}: "${o.labels}" already names a value of the model that is not a graph input; choose another labels name in ${optionName('loss')}.`);
    names.add(o.labels);
    labels = new Value(o.labels);
    labels.info = { name: o.labels, type: tensorType(DataType.INT64, labelDims) };
    graph.addInput(labels);
    shapes.set(labels, { elem: DataType.INT64, dims: labelDims });
  }
  const le = shapes.elem(labels), lr = shapes.rank(labels);
  if ((le !== DataType.INT64 && le !== DataType.INT32) || (lr !== undefined && lr !== labelDims.length)) {
    throw new TrainingOptionError(`${kind}: input "${o.labels}" must be int64 (or int32) of shape ${labelShape} (logits ${logits.name} are ${dimsText(shapes, logits)}); it is ${le === undefined ? 'of unknown type' : dataTypeName(le)}${lr === undefined ? '' : ` of rank ${lr}`}.`);
  }
  const e = new Emitter(graph, names, opset, shapes);
  const labels64 = le === DataType.INT64 ? labels : e.op('Cast', [labels], { to: attr.int(DataType.INT64) });
  const targets = o.shift ? next(e, labels64) : labels64;
  const counted = e.op('Not', [e.op('Equal', [targets, e.constant(Tensor.fromArray(DataType.INT64, [], BigInt64Array.from([BigInt(o.ignoreIndex)])), 'ignore_index')])]);
  // Ignored positions look up class 0 (any valid class): their weight is 0, and OneHot of -100 is not a row.
  const safeTargets = e.op('Where', [counted, targets, e.constant(Tensor.fromArray(DataType.INT64, [], BigInt64Array.from([0n])), 'zero_label')]);
  const weight = e.op('Cast', [counted], { to: attr.int(shapes.elem(logits)!) });
  return crossEntropy(e, { logits, shifted: o.shift }, safeTargets, weight, names);
}
