/**
 * The NEFTune pass: preconditions, the patch itself (plan every site, then emit), and the pass
 * object that ties options, check, apply and strip together under the GraphPass contract.
 */
import { DataType } from '../../graph/dtype.js';
import { Model, Value, type Node } from '../../graph/ir.js';
import { errorMessage, optionName, type OnnxNeftuneError } from '../../graph/errors.js';
import { tensorType } from '../../graph/builder.js';
import { NameAllocator } from '../../graph/names.js';
import { decodeModel, encodeModelProto } from '../../graph/codec.js';
import { modelToProto } from '../../graph/serde.js';
import { NOISE_MIN_OPSET, findEmbeddings, type EmbeddingReport } from '../embeddings.js';
import { AlreadyPatchedError, PatchOptionError } from '../errors.js';
import { runPass, type GraphPass } from '../pass.js';
import { normalizeWithSchema } from '../schema.js';
import { DEFAULT_ALPHA_INPUT, MODES, NEFTUNE_OPTIONS, type NeftuneOptions, type NormalizedOptions } from './options.js';
import { TOOL_VERSION, markedNodes, readPatchRecord, writeRecord, type PatchRecord } from './record.js';
import { selectTargets } from './targets.js';
import { planSite } from './sites.js';
import { MIN_OPSET, addedOpsetVersion, emitSite } from './chain.js';
import { isPatched } from './recognise.js';
import { stripNeftune, type StripResult } from './strip.js';

export interface PatchResult {
  model: Model;
  modified: true;
  record: PatchRecord;
  report: EmbeddingReport;
  warnings: string[];
}

/** What the pass's members take: the recorded options, plus how to run (`repatch`). */
export type NeftunePassOptions = NormalizedOptions & { repatch?: boolean };

function recorded(options: NeftunePassOptions): NormalizedOptions {
  const { repatch: _, ...rest } = options;
  return rest;
}

/** Preconditions: a patched model only with `repatch`; a default-domain opset the mode's ops exist at. */
export function checkNeftune(model: Model, options: NeftunePassOptions): OnnxNeftuneError[] {
  if (isPatched(model)) {
    if (options.repatch) return []; // the rest is checked on the stripped model (apply patches a stripped copy first)
    const record = readPatchRecord(model);
    const what = record ? ` (alpha ${record.options.alpha}, mode ${record.options.mode}, ${record.sites.length} site(s))` : '';
    return [new AlreadyPatchedError(errorMessage`The model is already NEFTune-patched${what}. Strip it first, or ask for a re-patch (${optionName('repatch')}), which strips and patches again.`)];
  }
  const opset = model.opsetVersion('') ?? addedOpsetVersion(model.irVersion, options.mode);
  const mode = options.mode;
  if (opset >= MIN_OPSET[mode]) return [];
  // Only modes that work at this opset are suggested (never the one in use).
  const working = MODES.filter((m) => m !== mode && MIN_OPSET[m] <= opset);
  const instead = working.length ? errorMessage` or use ${optionName('mode')} ${working.join(' or ')}` : '';
  const runtime = opset < NOISE_MIN_OPSET ? ' (ONNX Runtime runs opset 7 and newer only)' : '';
  return [new PatchOptionError(errorMessage`Mode ${mode} needs default-domain opset >= ${MIN_OPSET[mode]}; this model imports opset ${opset}${runtime}. NEFTune never changes a model's opset: convert the model (onnx.version_converter.convert_version(model, ${Math.max(13, MIN_OPSET[mode])}))${instead}.`)];
}

/**
 * Inserts the noise after each selected lookup (see GraphPass.apply: in place, all or nothing).
 * Every site is planned before anything changes, so an option that does not fit the model fails first.
 */
function patchNeftune(model: Model, options: NeftunePassOptions): PatchResult {
  const opts = recorded(options);
  if (options.repatch && isPatched(model)) {
    // Re-patch on a copy first, so a re-patch that cannot succeed leaves the model as it was. The
    // copy keeps deferred payloads as their placeholders: large tensors are not read for it.
    const trial = decodeModel(encodeModelProto(modelToProto(model)));
    stripNeftune(trial);
    applyNeftune(trial, opts);
    stripNeftune(model);
  }
  const declaredOpset = model.opsetVersion('');
  const opset = declaredOpset ?? addedOpsetVersion(model.irVersion, opts.mode);
  const report = findEmbeddings(model);
  const targets = selectTargets(report, opts);
  // Nodes the user named with the reserved prefix: recorded so strip can tell them from the patch's.
  const userNodes = markedNodes(model).map((n) => n.name!);
  // Everything the pass adds starts with 'neftune' (the reserved prefix, or the alpha input's name).
  const names = new NameAllocator(model, { prefix: 'neftune' });
  const warnings: string[] = [];
  const seenWarnings = new Set<string>();
  // Once each: thousands of sites can share one mask and the same doubt about it.
  const warn = (w: string) => { if (!seenWarnings.has(w)) { seenWarnings.add(w); warnings.push(w); } };
  const plans = targets.map((c) => planSite(c, opts, opset, warn));
  const alphaName = opts.alphaInput ? (typeof opts.alphaInput === 'string' ? opts.alphaInput : DEFAULT_ALPHA_INPUT) : undefined;
  if (alphaName !== undefined && names.has(alphaName)) {
    throw new PatchOptionError(errorMessage`Cannot add alpha input "${alphaName}": the model already uses that name; pass another name to ${optionName('alphaInput')}`);
  }
  if (opts.seed === undefined) {
    warnings.push('No seed: ONNX Runtime restarts the noise sequence with every new session in a process, so a training loop that creates a session per step trains on the same noise each step. Keep one session for the whole run.');
  }
  if (!looksLikeTrainingGraph(model)) {
    warnings.push('This graph has no backward pass: it looks like an eval or inference graph. NEFTune is a training-time method; strip the noise before using the model for inference.');
  }

  // Apply.
  const opsetImport = declaredOpset === undefined;
  if (opsetImport) {
    // A decoded model without opset imports inherits protobufjs's frozen empty list: give it its own.
    if (!Object.hasOwn(model.proto, 'opset_import')) model.proto.opset_import = [];
    model.addOpsetImport('', opset);
    warnings.push(`The model imported no default-domain opset; added ai.onnx version ${opset} for the noise ops (strip removes it again).`);
  }
  let alphaInput: Value | undefined;
  const graphInputs: string[] = [];
  if (alphaName !== undefined) {
    names.fresh(alphaName);
    alphaInput = new Value(alphaName);
    alphaInput.info = { name: alphaName, type: tensorType(DataType.FLOAT, []) };
    model.graph.addInput(alphaInput);
    graphInputs.push(alphaName);
  }
  const sites = plans.map((plan) => emitSite(plan, opts, names, opset, alphaInput));
  const record: PatchRecord = { tool: 'onnx-neftune', version: TOOL_VERSION, options: opts, sites, added: { graphInputs, opsetImport } };
  if (userNodes.length) record.userNodes = userNodes;
  writeRecord(model, record);
  return { model, modified: true, record, report, warnings };
}

/** Metadata key of the step graphs src/training builds (TRAINING_STEP_METADATA_KEY there; passes do not import training). */
const TRAINING_STEP_KEY = 'onnx_neftune.training_step';

const BACKWARD_OP = /Grad$|Grad_|Gradient|InPlaceAccumulator|SoftmaxCrossEntropyLossInternal|Optimizer$/;

/** An ATen / ATenOp node running a backward kernel; throws on a malformed operator name (not a string). */
function isBackwardAten(n: Node): boolean {
  if (n.opType === 'ATen') return /_backward$/.test(n.attributeValue<string>('operator', ''));
  return n.opType === 'ATenOp' && /_backward$/.test(n.attributeValue<string>('name', ''));
}

function readsCleanly(n: Node): boolean {
  try { isBackwardAten(n); return true; } catch { return false; }
}

/**
 * Backward ops, gradient outputs or our own training-step record mark a training graph. Decided
 * from each graph's op types and its ATen nodes, so the other nodes are never built.
 */
export function looksLikeTrainingGraph(model: Model): boolean {
  if (model.metadata.get(TRAINING_STEP_KEY) !== undefined) return true;
  for (const g of model.allGraphs()) {
    const atens = g.findNodes({ opType: ['ATen', 'ATenOp'] });
    let backwardOp = false;
    for (const opType of g.opTypeCounts().keys()) if (BACKWARD_OP.test(opType)) { backwardOp = true; break; }
    if (!backwardOp) {
      if (atens.some(isBackwardAten)) return true;
      continue;
    }
    // A backward op answers yes, unless a malformed ATen node before it throws first: only then does list order matter.
    if (atens.every(readsCleanly)) return true;
    for (const n of g) if (BACKWARD_OP.test(n.opType) || isBackwardAten(n)) return true;
  }
  return model.graph.outputs.some((o) => /_grad(\b|_|\.)/.test(o.name)) || model.graph.inputs.some((i) => /_grad\.accumulation/.test(i.name));
}

/** NEFTune as a GraphPass: what `applyNeftune` and the CLI's patch command run. */
export const neftunePass: GraphPass<NeftuneOptions, NeftunePassOptions, PatchResult, StripResult> = {
  name: 'neftune',
  description: 'Insert NEFTune noise (RandomUniformLike -> Mul -> Add) after the token-embedding lookups',
  options: NEFTUNE_OPTIONS,
  normalize: (options) => normalizeWithSchema(NEFTUNE_OPTIONS, options) as NeftunePassOptions,
  check: checkNeftune,
  apply: patchNeftune,
  inverse: stripNeftune,
};

/**
 * Inserts NEFTune noise after each selected lookup. Changes `model` in place and returns it with
 * a record of what was added. Refuses a patched model unless `repatch`.
 */
export function applyNeftune(model: Model, options: NeftuneOptions = {}): PatchResult {
  return runPass(neftunePass, model, options);
}
