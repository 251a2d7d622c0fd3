/**
 * NEFTune: adds U(-1, 1) * alpha / sqrt(L * d) to the output of each token-embedding lookup, and
 * removes exactly that again. The lookup writes a fresh name and the noise Add writes the original
 * value, so every reader (forward, backward, subgraph captures, graph outputs) sees the noisy
 * embedding and nothing else in the graph changes.
 */
import { DataType, dataTypeName } from '../graph/dtype.js';
import { OnnxModelError } from '../graph/errors.js';
import { Value, type Graph, type Model, type Node } from '../graph/ir.js';
import { attr, tensorType } from '../graph/builder.js';
import { NameAllocator } from '../graph/names.js';
import { decodeModel, encodeModelProto } from '../graph/codec.js';
import { modelToProto } from '../graph/serde.js';
import { Emitter } from './emit.js';
import { describeCandidate, findEmbeddings, type EmbeddingCandidate, type EmbeddingReport } from './embeddings.js';
import { AlreadyPatchedError, AmbiguousEmbeddingError, NoEmbeddingError, PatchOptionError } from './errors.js';

export const TOOL_VERSION = '0.1.0';
/** Every node and value the pass adds is named with this prefix. */
export const RESERVED_PREFIX = 'neftune__';
/** The model metadata_props key that records a patch. */
export const PATCH_METADATA_KEY = 'onnx_neftune.patch';
export const DEFAULT_ALPHA_INPUT = 'neftune_alpha';

export type NeftuneMode = 'hf' | 'mask' | 'packed';

export interface NeftuneOptions {
  /** Noise scale (default 5); finite and > 0. */
  alpha?: number;
  /** How L is counted: `hf` (runtime size of the last two dims), `mask` (per row), `packed` (per segment). */
  mode?: NeftuneMode;
  /** `mask` / `packed`: the attention-mask input (default `attention_mask`; `decoder_attention_mask` for decoder ids). */
  maskInput?: string;
  /** `packed`: the position-ids input (default `position_ids`). */
  positionIdsInput?: string;
  /** Patch the lookups of these tables instead of the default token table. */
  tables?: string[];
  /** Patch these lookup nodes (by node name). */
  nodes?: string[];
  /** Patch every patchable candidate. */
  allCandidates?: boolean;
  /** Integer seed written as RandomUniformLike's seed: reproducible noise per session. */
  seed?: number;
  /** Read alpha from a required float scalar graph input (true: `neftune_alpha`) so training can anneal it. */
  alphaInput?: boolean | string;
  /** Add the noise after a scalar scale Mul that directly follows the lookup (Gemma's sqrt(d)). */
  afterScale?: boolean;
  /** Patch a model that is already patched: strip first, then patch. */
  repatch?: boolean;
}

export interface PatchedSite {
  graphPath: string[];
  lookup: string;
  table: string;
  role: string;
  /** The value readers see (now noisy), and the fresh name the clean embedding got. */
  value: string;
  clean: string;
  /** Element type the noise is added in (ONNX DataType name). */
  dtype: string;
  afterScale: boolean;
  /** Inputs the mask / packed scaling reads (null in hf mode, or when packed rows have no mask). */
  maskInput: string | null;
  positionIdsInput: string | null;
  addedNodes: string[];
}

export interface PatchRecord {
  tool: string;
  version: string;
  options: Required<Pick<NeftuneOptions, 'alpha' | 'mode'>> & Omit<NeftuneOptions, 'alpha' | 'mode' | 'repatch'>;
  sites: PatchedSite[];
  added: { graphInputs: string[]; opsetImport: boolean };
}

export interface PatchResult {
  model: Model;
  modified: true;
  record: PatchRecord;
  report: EmbeddingReport;
  warnings: string[];
}

export interface StripResult {
  model: Model;
  modified: boolean;
  message: string;
  removedNodes: number;
  restoredValues: string[];
}

const MIN_OPSET: Record<NeftuneMode, number> = { hf: 7, mask: 8, packed: 16 };

/** Validates and fills in defaults; throws PatchOptionError with what was wrong. */
export function normalizeOptions(options: NeftuneOptions): PatchRecord['options'] {
  const alpha = options.alpha ?? 5;
  if (typeof alpha !== 'number' || !Number.isFinite(alpha) || alpha <= 0) {
    throw new PatchOptionError(`alpha must be a finite number > 0, got ${String(alpha)}; the paper uses 5, 10 or 15`);
  }
  const mode = options.mode ?? 'hf';
  if (!['hf', 'mask', 'packed'].includes(mode)) throw new PatchOptionError(`mode must be hf, mask or packed, got "${mode}"`);
  if (options.seed !== undefined && (!Number.isInteger(options.seed) || Math.abs(options.seed) > 2 ** 24)) {
    throw new PatchOptionError(`seed must be an integer with |seed| <= 2^24 (it is stored as a float), got ${options.seed}`);
  }
  if (options.alphaInput !== undefined && typeof options.alphaInput === 'string' && !options.alphaInput) {
    throw new PatchOptionError('alphaInput name must not be empty');
  }
  const out: PatchRecord['options'] = { alpha, mode };
  for (const k of ['maskInput', 'positionIdsInput', 'tables', 'nodes', 'allCandidates', 'seed', 'alphaInput', 'afterScale'] as const) {
    if (options[k] !== undefined && !(Array.isArray(options[k]) && (options[k] as unknown[]).length === 0)) (out as Record<string, unknown>)[k] = options[k];
  }
  return out;
}

/** Whether the model carries a NEFTune patch (the metadata record, or nodes with the reserved prefix). */
export function isPatched(model: Model): boolean {
  return model.metadata.get(PATCH_METADATA_KEY) !== undefined || markedNodes(model).length > 0;
}

/**
 * The recorded patch, if the metadata entry is present and has the fields strip and verify use.
 * Fields added after a record was written are filled in from the model (a site's element type
 * from its value or table); a record that cannot be completed counts as unreadable.
 */
export function readPatchRecord(model: Model): PatchRecord | undefined {
  const text = model.metadata.get(PATCH_METADATA_KEY);
  if (text === undefined) return undefined;
  let record: unknown;
  try { record = JSON.parse(text); } catch { return undefined; }
  const isObject = (x: unknown): x is Record<string, unknown> => typeof x === 'object' && x !== null && !Array.isArray(x);
  if (!isObject(record) || !isObject(record['options']) || !Array.isArray(record['sites'])) return undefined;
  for (const site of record['sites'] as unknown[]) {
    if (!isObject(site) || !Array.isArray(site['graphPath']) || !Array.isArray(site['addedNodes'])) return undefined;
    if (!['value', 'clean', 'lookup', 'table'].every((k) => typeof site[k] === 'string')) return undefined;
    site['dtype'] ??= recordedSiteType(model, site['value'] as string, site['table'] as string);
    if (typeof site['dtype'] !== 'string') return undefined;
    site['afterScale'] ??= false;
    site['maskInput'] ??= null;
    site['positionIdsInput'] ??= null;
  }
  return record as unknown as PatchRecord;
}

function recordedSiteType(model: Model, value: string, table: string): string | undefined {
  for (const g of model.allGraphs()) {
    const type = g.value(value)?.elemType ?? g.value(table)?.initializer?.dataType ?? g.value(table)?.elemType;
    if (type !== undefined) return dataTypeName(type);
  }
  return undefined;
}

function markedNodes(model: Model): Node[] {
  const found: Node[] = [];
  for (const g of model.allGraphs()) for (const n of g) if (n.name?.startsWith(RESERVED_PREFIX)) found.push(n);
  return found;
}

/** Chooses the lookups to patch: the default token table, or what the options name. */
export function selectTargets(report: EmbeddingReport, options: PatchRecord['options']): EmbeddingCandidate[] {
  const shownCandidates = 50;
  const listing = () => report.candidates.length
    ? `Candidates:\n${report.candidates.slice(0, shownCandidates).map((c) => `  - ${describeCandidate(c)}`).join('\n')}${report.candidates.length > shownCandidates ? `\n  ... and ${report.candidates.length - shownCandidates} more (neftune inspect lists them all)` : ''}`
    : 'The model has no embedding lookups (Gather on a 2-D table, GatherBlockQuantized, ATen embedding).';
  const how = 'Choose with --table <name> (repeatable), --node <name> (repeatable) or --all-candidates.';
  const refuseInvalid = (invalid: EmbeddingCandidate[], what: string): never => {
    const shown = invalid.slice(0, 10).map((c) => `${c.nodeLabel}: ${c.invalidReason}`).join('; ') + (invalid.length > 10 ? `; ... and ${invalid.length - 10} more` : '');
    throw new OnnxModelError(`${what} cannot be patched: the model is malformed there: ${shown}. Fix or re-export the model.`);
  };
  let chosen: EmbeddingCandidate[];
  if (options.allCandidates) {
    chosen = report.candidates.filter((c) => c.patchable);
  } else if (options.tables?.length || options.nodes?.length) {
    // Grouped once (Maps: any name, `__proto__` included, is a plain key); a Set keeps each lookup once.
    const byTable = new Map<string, EmbeddingCandidate[]>();
    const byNode = new Map<string, EmbeddingCandidate[]>();
    const add = (map: Map<string, EmbeddingCandidate[]>, key: string, c: EmbeddingCandidate) => {
      const list = map.get(key);
      if (list) list.push(c); else map.set(key, [c]);
    };
    for (const c of report.candidates) {
      add(byTable, c.table.name, c);
      if (c.node.name !== undefined) add(byNode, c.node.name, c);
    }
    const picked = new Set<EmbeddingCandidate>();
    for (const name of options.tables ?? []) {
      const hits = byTable.get(name);
      if (!hits) throw new PatchOptionError(`No embedding lookup reads a table named "${name}". ${listing()}`);
      for (const c of hits) picked.add(c);
    }
    for (const name of options.nodes ?? []) {
      const hits = byNode.get(name);
      if (!hits) throw new PatchOptionError(`No embedding lookup node is named "${name}". ${listing()}`);
      for (const c of hits) picked.add(c);
    }
    chosen = [...picked];
    const invalid = chosen.filter((c) => c.invalidReason);
    if (invalid.length) refuseInvalid(invalid, invalid.length > 1 ? 'The selected lookups' : 'The selected lookup');
    const fused = chosen.filter((c) => !c.patchable);
    if (fused.length) throw new NoEmbeddingError(`${fused[0]!.nodeLabel} cannot be patched: ${fused[0]!.notPatchableReason}`);
  } else if (report.ambiguous) {
    throw new AmbiguousEmbeddingError(`Cannot tell which table is the token embedding: ${report.targetReason}. ${how}\n${listing()}`,
      report.candidates.map(describeCandidate));
  } else {
    chosen = report.defaultTarget;
  }
  if (!chosen.length) {
    const invalid = report.candidates.filter((c) => c.invalidReason && (options.allCandidates || c.role === 'token'));
    if (invalid.length) refuseInvalid(invalid, options.allCandidates ? 'No lookup' : 'The token embedding');
    throw new NoEmbeddingError(`No token embedding to patch: ${report.targetReason}. ${report.candidates.length ? how : ''}\n${listing()}`.trim());
  }
  return chosen;
}

/**
 * Inserts NEFTune noise after each selected lookup. Changes `model` in place and returns it with
 * a record of what was added. Refuses a patched model unless `repatch`.
 */
export function applyNeftune(model: Model, options: NeftuneOptions = {}): PatchResult {
  const opts = normalizeOptions(options);
  if (isPatched(model)) {
    if (!options.repatch) {
      const record = readPatchRecord(model);
      throw new AlreadyPatchedError(`The model is already NEFTune-patched${record ? ` (alpha ${record.options.alpha}, mode ${record.options.mode}, ${record.sites.length} site(s))` : ''}. Strip it first, or ask for a re-patch (--repatch), which strips and patches again.`);
    }
    // Re-patch on a copy first, so a re-patch that cannot succeed leaves the model as it was. The
    // copy keeps deferred payloads as their placeholders: large tensors are not read for it.
    const trial = decodeModel(encodeModelProto(modelToProto(model)));
    stripNeftune(trial);
    applyNeftune(trial, { ...options, repatch: false });
    stripNeftune(model);
  }
  // Plan every site first: an option that does not fit the model fails before anything changes.
  const declaredOpset = model.opsetVersion('');
  // A model without a default-domain import (contrib ops only) still needs one for the noise ops:
  // the newest opset its IR version allows, capped where ONNX Runtime support is broad.
  const opset = declaredOpset ?? Math.max(MIN_OPSET[opts.mode], Math.min(21, maxOpsetForIrVersion(model.irVersion)));
  if (opset < MIN_OPSET[opts.mode]) {
    throw new PatchOptionError(`Mode ${opts.mode} needs default-domain opset >= ${MIN_OPSET[opts.mode]}; this model imports opset ${opset}. NEFTune never changes a model's opset: convert the model (onnx.version_converter) or use mode hf${opts.mode === 'packed' ? ' or mask' : ''}.`);
  }
  const report = findEmbeddings(model);
  const targets = selectTargets(report, opts);
  // Everything the pass adds starts with 'neftune' (the reserved prefix, or the alpha input's name).
  const names = new NameAllocator(model, { prefix: 'neftune' });
  const warnings: string[] = [];
  const plans = targets.map((c) => planSite(c, opts, opset, warnings));
  const alphaName = opts.alphaInput ? (typeof opts.alphaInput === 'string' ? opts.alphaInput : DEFAULT_ALPHA_INPUT) : undefined;
  if (alphaName !== undefined && names.has(alphaName)) {
    throw new PatchOptionError(`Cannot add alpha input "${alphaName}": the model already uses that name; pass another name to alphaInput`);
  }
  if (!looksLikeTrainingGraph(model)) {
    warnings.push('This graph has no backward pass: it looks like an eval or inference graph. NEFTune is a training-time method; strip the noise before using the model for inference.');
  }

  // Apply.
  const opsetImport = declaredOpset === undefined;
  if (opsetImport) {
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
  model.metadata.set(PATCH_METADATA_KEY, JSON.stringify(record));
  return { model, modified: true, record, report, warnings };
}

interface SitePlan {
  candidate: EmbeddingCandidate;
  siteNode: Node;
  type: DataType;
  afterScale: boolean;
  mask: Value | undefined;
  positions: Value | undefined;
}

function planSite(c: EmbeddingCandidate, opts: PatchRecord['options'], opset: number, warnings: string[]): SitePlan {
  // Malformed lookups are refused by selectTargets; checked again here because emitting needs an output to rename.
  if (c.invalidReason) throw new OnnxModelError(`${c.nodeLabel} cannot be patched: ${c.invalidReason}. Fix or re-export the model.`);
  const afterScale = !!opts.afterScale && !!c.scale;
  if (opts.afterScale && !c.scale) warnings.push(`${c.nodeLabel}: no scalar scale Mul follows the lookup; noise added right after the lookup.`);
  if (c.scale?.invalidReason) {
    if (afterScale) throw new OnnxModelError(`${c.nodeLabel}: cannot add the noise after scale Mul ${c.scale.node.describe()}: ${c.scale.invalidReason}. Fix the constant, or patch without --after-scale.`);
    warnings.push(`${c.nodeLabel}: the scale Mul ${c.scale.node.describe()} after the lookup is malformed (${c.scale.invalidReason}); ONNX Runtime will refuse the model until it is fixed.`);
  }
  const siteNode: Node = afterScale ? c.scale!.node : c.node;
  const graph = siteNode.graph!;
  const output = siteNode.outputs[0];
  if (!output || output.name === '') throw new OnnxModelError(`${siteNode.describe()} has no output to add the noise to${afterScale ? ' (the scale Mul after ' + c.nodeLabel + ')' : ''}. Fix or re-export the model.`);
  const type = siteType(c, afterScale);
  if (type === undefined) throw new PatchOptionError(`Cannot tell the element type of ${output.name} (the output of ${c.nodeLabel}); declare it in value_info`);
  if (![DataType.FLOAT, DataType.FLOAT16, DataType.BFLOAT16, DataType.DOUBLE].includes(type)) {
    throw new PatchOptionError(`${c.nodeLabel} outputs ${dataTypeName(type)}; NEFTune noise needs a floating-point embedding`);
  }
  if (type === DataType.BFLOAT16 && opset < 9) throw new PatchOptionError('bfloat16 embeddings need opset >= 9 (ConstantOfShape)');
  let mask: Value | undefined;
  let positions: Value | undefined;
  if (opts.mode === 'mask') mask = requireInput(graph, maskName(c, opts), 'mask', c);
  if (opts.mode === 'packed') {
    positions = requireInput(graph, opts.positionIdsInput ?? 'position_ids', 'position ids', c);
    mask = opts.maskInput ? requireInput(graph, opts.maskInput, 'mask', c) : findInput(graph, maskName(c, opts));
  }
  return { candidate: c, siteNode, type, afterScale, mask, positions };
}

function emitSite(plan: SitePlan, opts: PatchRecord['options'], names: NameAllocator, opset: number, alphaInput: Value | undefined): PatchedSite {
  const { candidate: c, siteNode, type } = plan;
  const graph = siteNode.graph!;
  const original = siteNode.outputs[0]!;
  const clean = new Value(names.fresh(`${RESERVED_PREFIX}${original.name}__clean`));
  siteNode.replaceOutput(0, clean);
  const e = new Emitter(graph, siteNode, names, `${RESERVED_PREFIX}${safe(original.name)}__`, opset);
  const alpha = alphaInput ?? e.scalarFloat(opts.alpha, 'alpha');
  const shape = e.op('Shape', [clean], {}, 'shape');

  // ORT's RandomUniformLike takes float/double/fp16 inputs; for bf16 it gets a float tensor of the same shape.
  const uniformInput = type === DataType.BFLOAT16 ? e.op('ConstantOfShape', [shape], {}, 'zeros') : clean;
  const uniformAttrs: Record<string, ReturnType<typeof attr.float>> = { dtype: attr.int(DataType.FLOAT), low: attr.float(-1), high: attr.float(1) };
  if (opts.seed !== undefined) uniformAttrs['seed'] = attr.float(opts.seed);
  const uniform = e.op('RandomUniformLike', [uniformInput], uniformAttrs, 'uniform');

  let noise: Value;
  if (opts.mode === 'hf') {
    const lastTwo = e.cast(e.sliceTail(shape, -2, 'last_two_dims'), DataType.FLOAT, 'last_two_dims_float');
    const ld = e.reduceProd(lastTwo, 'L_times_d');
    const scale = e.op('Div', [alpha, e.op('Sqrt', [ld], {}, 'sqrt_L_times_d')], {}, 'scale');
    noise = e.op('Mul', [uniform, scale], {}, 'noise');
  } else {
    const maskF = plan.mask ? e.cast(plan.mask, DataType.FLOAT, 'mask_float')
      // No mask input (packed rows without padding): every position is a real token.
      : e.cast(e.op('Equal', [plan.positions!, plan.positions!], {}, 'all_tokens'), DataType.FLOAT, 'mask_float');
    const d = e.cast(e.sliceTail(shape, -1, 'd'), DataType.FLOAT, 'd_float');
    let lengths: Value;
    if (opts.mode === 'mask') {
      lengths = e.reduceSum(maskF, [1], true, 'row_lengths');
    } else {
      const positions64 = e.cast(plan.positions!, DataType.INT64, 'position_ids_i64');
      const starts = e.cast(e.op('Equal', [positions64, e.scalarInt64(0, 'zero')], {}, 'segment_starts'), DataType.INT64, 'segment_starts_i64');
      const segment = e.op('CumSum', [starts, e.scalarInt64(1, 'cumsum_axis')], {}, 'segment_number');
      // Tokens before the first position 0 of a row join its first segment.
      const index = e.op('Max', [e.op('Sub', [segment, e.scalarInt64(1, 'one_i64')], {}, 'segment_index_raw'), e.scalarInt64(0, 'zero_index')], {}, 'segment_index');
      const zeros = e.op('Sub', [maskF, maskF], {}, 'zeros');
      const counts = e.op('ScatterElements', [zeros, index, maskF], { axis: attr.int(1), reduction: attr.string('add') }, 'segment_lengths');
      lengths = e.op('GatherElements', [counts, index], { axis: attr.int(1) }, 'token_segment_length');
    }
    // max(L*d, 1): an empty row (L = 0) gets scale alpha, times a zero mask: zero noise, never NaN.
    const ld = e.op('Max', [e.op('Mul', [lengths, d], {}, 'L_times_d'), e.scalarFloat(1, 'one')], {}, 'L_times_d_at_least_1');
    const scale = e.op('Div', [alpha, e.op('Sqrt', [ld], {}, 'sqrt_L_times_d')], {}, 'scale');
    const perToken = e.unsqueeze(e.op('Mul', [maskF, scale], {}, 'token_scale'), [2], 'token_scale_3d');
    noise = e.op('Mul', [uniform, perToken], {}, 'noise');
  }
  if (type === DataType.BFLOAT16) {
    // ONNX Runtime's CPU and wasm EPs have no bfloat16 Add: add in float32, round once to bfloat16.
    // bfloat16 -> float32 is exact, so alpha 0 still gives back the clean embedding bit for bit.
    const sum = e.op('Add', [e.cast(clean, DataType.FLOAT, 'clean_float'), noise], {}, 'add_float');
    e.op('Cast', [sum], { to: attr.int(DataType.BFLOAT16) }, 'add', original);
  } else {
    if (type !== DataType.FLOAT) noise = e.cast(noise, type, 'noise_cast');
    e.op('Add', [clean, noise], {}, 'add', original);
  }
  return {
    graphPath: c.graphPath, lookup: c.nodeLabel, table: c.table.name, role: c.role,
    value: original.name, clean: clean.name, dtype: dataTypeName(type), afterScale: plan.afterScale,
    maskInput: plan.mask?.name ?? null, positionIdsInput: plan.positions?.name ?? null,
    addedNodes: e.added.map((n) => n.name!),
  };
}

/** The newest default-domain opset a given IR version can carry (from the ONNX versioning table). */
function maxOpsetForIrVersion(ir: number): number {
  const table: Record<number, number> = { 3: 8, 4: 9, 5: 10, 6: 11, 7: 14, 8: 18, 9: 20, 10: 22, 11: 23, 12: 24, 13: 25 };
  return table[ir] ?? (ir > 13 ? 25 : 8);
}

function safe(name: string): string { return name.replace(/[^A-Za-z0-9_.]/g, '_').slice(0, 64); }

function siteType(c: EmbeddingCandidate, afterScale: boolean): DataType | undefined {
  if (!afterScale) return c.outputType;
  const mul = c.scale!.node;
  return mul.outputs[0]?.elemType ?? (c.node.outputs[0]!.uses[0]!.node.opType === 'Cast'
    ? c.node.outputs[0]!.uses[0]!.node.attributeValue<number>('to') : c.outputType);
}

/** The mask a site uses: as given, else `decoder_attention_mask` for decoder ids, else `attention_mask` or `input_mask`. */
function maskName(c: EmbeddingCandidate, opts: PatchRecord['options']): string {
  if (opts.maskInput) return opts.maskInput;
  const graph = c.node.graph!;
  if (c.indices.input?.startsWith('decoder_')) return 'decoder_attention_mask';
  return ['attention_mask', 'input_mask'].find((name) => findInput(graph, name)) ?? 'attention_mask';
}

/** A graph input (of the site's graph or an enclosing one) with this name. */
function findInput(graph: Graph, name: string): Value | undefined {
  const v = graph.lookup(name);
  return v && v.graph?.inputs.includes(v) ? v : undefined;
}

function requireInput(graph: Graph, name: string, what: string, c: EmbeddingCandidate): Value {
  const v = findInput(graph, name);
  if (v) return v;
  const inputs: string[] = [];
  for (let g: Graph | null = graph; g; g = g.parentScope) inputs.push(...g.inputs.map((i) => i.name));
  const option = what === 'mask' ? '--mask-input' : '--position-ids-input';
  throw new PatchOptionError(`The ${what} input "${name}" is not visible from ${c.nodeLabel}. Graph inputs: ${inputs.join(', ') || '(none)'}. Name it with ${option}.`);
}

function cleanSource(node: Node, marked: Set<Node>, seen = new Set<Node>()): Value | undefined {
  seen.add(node);
  for (const input of node.inputs) {
    if (!input) continue;
    const producer = input.producer;
    if (producer && marked.has(producer)) {
      if (seen.has(producer)) continue;
      const found = cleanSource(producer, marked, seen);
      if (found) return found;
    } else if (producer && input.name.startsWith(RESERVED_PREFIX)) {
      return input;
    }
  }
  return undefined;
}

/** Backward ops or gradient outputs mark a training graph. */
export function looksLikeTrainingGraph(model: Model): boolean {
  for (const g of model.allGraphs()) {
    for (const n of g) {
      if (/Grad$|Grad_|Gradient|InPlaceAccumulator|SoftmaxCrossEntropyLossInternal|Optimizer$/.test(n.opType)) return true;
      if (n.opType === 'ATen' && /_backward$/.test(n.attributeValue<string>('operator', ''))) return true;
    }
  }
  return model.graph.outputs.some((o) => /_grad(\b|_|\.)/.test(o.name)) || model.graph.inputs.some((i) => /_grad\.accumulation/.test(i.name));
}

/**
 * Removes everything a NEFTune patch added and gives each lookup its original output back, so the
 * model encodes to its pre-patch bytes. Works from the metadata record or, when that was lost, from
 * the reserved-prefix nodes. An unpatched model is left alone (modified: false).
 */
export function stripNeftune(model: Model): StripResult {
  const record = readPatchRecord(model);
  const marked = markedNodes(model);
  if (!marked.length && model.metadata.get(PATCH_METADATA_KEY) === undefined) {
    return { model, modified: false, message: 'Nothing to strip: the model carries no NEFTune patch.', removedNodes: 0, restoredValues: [] };
  }
  const markedSet = new Set(marked);
  // Graph inputs the patch added: from the record, else float scalars that only marked nodes read.
  const addedInputs = new Set(record?.added.graphInputs ?? []);
  if (!record) {
    for (const input of model.graph.inputs) {
      const onlyMarked = input.uses.length > 0 && input.uses.every((u) => markedSet.has(u.node));
      const type = input.type?.tensor_type;
      if (onlyMarked && type?.elem_type === DataType.FLOAT && (type.shape?.dim ?? []).length === 0 && type.shape) addedInputs.add(input.name);
    }
  }
  const restores: Array<{ site: Node; index: number; original: Value }> = [];
  for (const node of marked) {
    const out = node.outputs[0];
    if (!out || out.name.startsWith(RESERVED_PREFIX)) continue;
    // A marked node writing an unprefixed name gives a lookup's original value back; the lookup's
    // renamed (clean) output is the prefixed value, produced outside the patch, that it derives from.
    const clean = cleanSource(node, markedSet);
    if (clean?.producer) restores.push({ site: clean.producer, index: clean.producerIndex, original: out });
  }
  for (const node of marked) node.graph!.remove(node, { force: true });
  for (const { site, index, original } of restores) site.replaceOutput(index, original);
  for (const name of addedInputs) {
    const i = model.graph.inputs.findIndex((v) => v.name === name);
    if (i < 0) continue;
    const [input] = model.graph.inputs.splice(i, 1);
    if (model.graph.scope.get(name) === input) model.graph.scope.delete(name);
  }
  if (record?.added.opsetImport) {
    const list = model.proto.opset_import ?? [];
    const i = list.findIndex((o) => (o.domain ?? '') === '');
    if (i >= 0) list.splice(i, 1);
    if (!list.length) delete model.proto.opset_import;
  }
  model.metadata.delete(PATCH_METADATA_KEY);
  return {
    model, modified: true, removedNodes: marked.length, restoredValues: restores.map((r) => r.original.name),
    message: `Removed ${marked.length} node(s) and restored ${restores.length} embedding output(s)${record ? '' : ' (metadata record was missing; found the patch by its reserved names)'}.`,
  };
}
