/**
 * NEFTune: adds U(-1, 1) * alpha / sqrt(L * d) to the output of each token-embedding lookup, and
 * removes exactly that again. The lookup writes a fresh name and the noise Add writes the original
 * value, so every reader (forward, backward, subgraph captures, graph outputs) sees the noisy
 * embedding and nothing else in the graph changes.
 */
import { DataType, dataTypeName, parseDataType } from '../graph/dtype.js';
import { Graph, Model, Node, Value, type Attribute } from '../graph/ir.js';
import { OnnxModelError } from '../graph/errors.js';
import { attr, tensorType } from '../graph/builder.js';
import { NameAllocator } from '../graph/names.js';
import { decodeModel, encodeModelProto } from '../graph/codec.js';
import { modelToProto } from '../graph/serde.js';
import { AttributeProtoType, int64ToNumber } from '../graph/proto.js';
import { Tensor } from '../graph/tensor.js';
import { Emitter } from './emit.js';
import { NOISE_MIN_OPSET, describeCandidate, findEmbeddings, type EmbeddingCandidate, type EmbeddingReport } from './embeddings.js';
import { AlreadyPatchedError, AmbiguousEmbeddingError, NoEmbeddingError, PatchMismatchError, PatchOptionError } from './errors.js';

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
  /** Nodes already named with the reserved prefix before the patch (the user's own; strip leaves them). */
  userNodes?: string[];
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

const MIN_OPSET: Record<NeftuneMode, number> = { hf: NOISE_MIN_OPSET, mask: 8, packed: 16 };

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

/**
 * Whether the model carries a NEFTune patch: a readable patch record (or several conflicting
 * ones), or a chain of nodes with the structure the patch emits. Nodes named with the reserved
 * prefix alone do not count: a user may name their own nodes so.
 */
export function isPatched(model: Model): boolean {
  const state = recordState(model);
  if (state.kind === 'valid' || state.kind === 'conflicting') return true;
  return findChains(model, markedNodes(model)).length > 0;
}

/**
 * The recorded patch, if the metadata entry is present and every field strip and verify use is
 * there with the right type. Never throws. Fields added after a record was written are filled in
 * from the model (a site's element type from its value or table); a record that cannot be
 * completed, is not JSON (including a record too deep or too large to parse), or has a field of
 * the wrong type counts as absent: strip then finds the patch by structure alone, which only ever
 * removes exact chains, so a damaged record can cost the byte-exact opset restore but never a node
 * of the model. Several entries with the key count as one record when identical, and as absent
 * here when they differ (strip refuses those: which patch was applied is unknown). The returned
 * object is built from the validated fields only.
 */
export function readPatchRecord(model: Model): PatchRecord | undefined {
  const state = recordState(model);
  return state.kind === 'valid' ? state.record : undefined;
}

type RecordState =
  | { kind: 'absent' }
  | { kind: 'valid'; record: PatchRecord }
  | { kind: 'malformed'; reason: string }
  | { kind: 'conflicting'; count: number };

function recordState(model: Model): RecordState {
  const texts = model.metadata.entries.filter((e) => e.key === PATCH_METADATA_KEY).map((e) => e.value);
  if (!texts.length) return { kind: 'absent' };
  if (texts.some((t) => t !== texts[0])) return { kind: 'conflicting', count: texts.length };
  try {
    const parsed = parseRecord(texts[0]!, model);
    return typeof parsed === 'string' ? { kind: 'malformed', reason: parsed } : { kind: 'valid', record: parsed };
  } catch (error) {
    // Parsing is written not to throw; this keeps readers total even so.
    return { kind: 'malformed', reason: String((error as Error)?.message ?? error).slice(0, 200) };
  }
}

type Json = Record<string, unknown>;
const isObject = (x: unknown): x is Json => typeof x === 'object' && x !== null && !Array.isArray(x);
const isString = (x: unknown): x is string => typeof x === 'string';
const isBoolean = (x: unknown): x is boolean => typeof x === 'boolean';
const isStringArray = (x: unknown): x is string[] => Array.isArray(x) && x.every(isString);
const MODES: readonly NeftuneMode[] = ['hf', 'mask', 'packed'];
const NOISE_TYPES = [DataType.FLOAT, DataType.FLOAT16, DataType.BFLOAT16, DataType.DOUBLE];
const NOISE_TYPE_NAMES = NOISE_TYPES.map(dataTypeName);
const OPTIONAL_OPTIONS: Record<string, (x: unknown) => boolean> = {
  maskInput: isString, positionIdsInput: isString, tables: isStringArray, nodes: isStringArray, allCandidates: isBoolean,
  seed: (x) => Number.isInteger(x) && Math.abs(x as number) <= 2 ** 24,
  alphaInput: (x) => isBoolean(x) || (isString(x) && x !== ''),
  afterScale: isBoolean,
};

/** The validated record, or why it is unusable. */
function parseRecord(text: string, model: Model): PatchRecord | string {
  let raw: unknown;
  try { raw = JSON.parse(text); } catch (error) { return `not JSON (${(error as Error).message.slice(0, 100)})`; }
  if (!isObject(raw)) return `not a JSON object (${Array.isArray(raw) ? 'an array' : raw === null ? 'null' : typeof raw})`;
  if (!isString(raw['tool']) || !isString(raw['version'])) return 'tool or version is missing or not a string';
  const options = parseOptions(raw['options']);
  if (isString(options)) return options;
  const rawSites = raw['sites'];
  if (!Array.isArray(rawSites) || !rawSites.length) return 'sites is not a non-empty array';
  const sites: PatchedSite[] = [];
  for (let i = 0; i < rawSites.length; i++) {
    const site = parseSite(rawSites[i], model);
    if (isString(site)) return `sites[${i}]: ${site}`;
    sites.push(site);
  }
  const added = raw['added'];
  if (!isObject(added) || !isStringArray(added['graphInputs']) || !isBoolean(added['opsetImport'])) {
    return 'added is not { graphInputs: string[], opsetImport: boolean }';
  }
  const record: PatchRecord = {
    tool: raw['tool'], version: raw['version'], options, sites, added: { graphInputs: [...added['graphInputs']], opsetImport: added['opsetImport'] },
  };
  const userNodes = raw['userNodes'];
  if (userNodes !== undefined) {
    if (!isStringArray(userNodes)) return 'userNodes is not an array of strings';
    record.userNodes = [...userNodes];
  }
  return record;
}

function parseOptions(raw: unknown): PatchRecord['options'] | string {
  if (!isObject(raw)) return 'options is not an object';
  const alpha = raw['alpha'], mode = raw['mode'];
  if (typeof alpha !== 'number' || !Number.isFinite(alpha) || alpha <= 0) return 'options.alpha is not a finite number > 0';
  if (!MODES.includes(mode as NeftuneMode)) return 'options.mode is not hf, mask or packed';
  const options: PatchRecord['options'] = { alpha, mode: mode as NeftuneMode };
  for (const [key, valid] of Object.entries(OPTIONAL_OPTIONS)) {
    const value = raw[key];
    if (value === undefined) continue;
    if (!valid(value)) return `options.${key} has the wrong type`;
    (options as Json)[key] = Array.isArray(value) ? [...value] : value;
  }
  return options;
}

function parseSite(raw: unknown, model: Model): PatchedSite | string {
  if (!isObject(raw)) return 'not an object';
  if (!isStringArray(raw['graphPath']) || !raw['graphPath'].length) return 'graphPath is not a non-empty array of strings';
  const names = ['lookup', 'table', 'role', 'value', 'clean'] as const;
  const missing = names.find((k) => !isString(raw[k]));
  if (missing) return `${missing} is missing or not a string`;
  const [lookup, table, role, value, clean] = names.map((k) => raw[k] as string) as [string, string, string, string, string];
  if (!isStringArray(raw['addedNodes']) || !raw['addedNodes'].length) return 'addedNodes is not a non-empty array of strings';
  const dtype = raw['dtype'] ?? recordedSiteType(model, value, table);
  if (!NOISE_TYPE_NAMES.includes(dtype as string)) return `dtype is not one of ${NOISE_TYPE_NAMES.join(', ')}`;
  const afterScale = raw['afterScale'] ?? false;
  if (!isBoolean(afterScale)) return 'afterScale is not a boolean';
  const maskInput = raw['maskInput'] ?? null, positionIdsInput = raw['positionIdsInput'] ?? null;
  if (maskInput !== null && !isString(maskInput)) return 'maskInput is not a string or null';
  if (positionIdsInput !== null && !isString(positionIdsInput)) return 'positionIdsInput is not a string or null';
  return {
    graphPath: [...raw['graphPath']], lookup, table, role, value, clean, dtype: dtype as string, afterScale,
    maskInput, positionIdsInput, addedNodes: [...raw['addedNodes']],
  };
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
    // Choosing by table or node helps only when some candidate can be patched (not when all are fused or need a newer opset).
    const choosable = report.candidates.some((c) => c.patchable);
    const what = options.allCandidates ? 'No candidate can be patched' : 'No token embedding to patch';
    throw new NoEmbeddingError(`${what}: ${report.targetReason}.${choosable ? ` ${how}` : ''}\n${listing()}`.trim());
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
  const opset = declaredOpset ?? addedOpsetVersion(model.irVersion, opts.mode);
  if (opset < MIN_OPSET[opts.mode]) {
    // Only modes that work at this opset are suggested (never the one in use).
    const working = MODES.filter((m) => m !== opts.mode && MIN_OPSET[m] <= opset);
    const instead = working.length ? ` or use mode ${working.join(' or ')}` : '';
    const runtime = opset < NOISE_MIN_OPSET ? ' (ONNX Runtime runs opset 7 and newer only)' : '';
    throw new PatchOptionError(`Mode ${opts.mode} needs default-domain opset >= ${MIN_OPSET[opts.mode]}; this model imports opset ${opset}${runtime}. NEFTune never changes a model's opset: convert the model (onnx.version_converter.convert_version(model, ${Math.max(13, MIN_OPSET[opts.mode])}))${instead}.`);
  }
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
    throw new PatchOptionError(`Cannot add alpha input "${alphaName}": the model already uses that name; pass another name to alphaInput`);
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
  // An unreadable entry left without a patch in the graph is replaced (all copies of it).
  while (model.metadata.delete(PATCH_METADATA_KEY));
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

function planSite(c: EmbeddingCandidate, opts: PatchRecord['options'], opset: number, warn: (w: string) => void): SitePlan {
  // Malformed lookups are refused by selectTargets; checked again here because emitting needs an output to rename.
  if (c.invalidReason) throw new OnnxModelError(`${c.nodeLabel} cannot be patched: ${c.invalidReason}. Fix or re-export the model.`);
  const afterScale = !!opts.afterScale && !!c.scale;
  if (opts.afterScale && !c.scale) warn(`${c.nodeLabel}: no scalar scale Mul follows the lookup; noise added right after the lookup.`);
  if (c.scale?.invalidReason) {
    if (afterScale) throw new OnnxModelError(`${c.nodeLabel}: cannot add the noise after scale Mul ${c.scale.node.describe()}: ${c.scale.invalidReason}. Fix the constant, or patch without --after-scale.`);
    warn(`${c.nodeLabel}: the scale Mul ${c.scale.node.describe()} after the lookup is malformed (${c.scale.invalidReason}); ONNX Runtime will refuse the model until it is fixed.`);
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
  const ids = idsShape(c);
  if (mask) checkCompanionShape(c, graph, ids, mask, 'mask', warn);
  if (positions) checkCompanionShape(c, graph, ids, positions, 'position ids', warn);
  return { candidate: c, siteNode, type, afterScale, mask, positions };
}

type Dims = readonly (number | string | undefined)[];

/**
 * The token ids' declared shape at a lookup: the indices' own (or that of what they are an
 * Identity/Cast of), else the lookup output's without its last dim, else the token-id input's
 * when the indices are computed from it element-wise only; undefined when none is declared.
 */
function idsShape(c: EmbeddingCandidate): { what: string; dims: Dims } | undefined {
  let v = c.node.input(1);
  for (let steps = 0; v && steps < 32; steps++) {
    if (v.shape) return { what: `"${v.name}"`, dims: v.shape };
    const p: Node | null = v.producer;
    if (!p || !(p.opType === 'Identity' || p.opType === 'Cast')) break;
    v = p.input(0);
  }
  const output = c.node.outputs[0];
  const out = output?.shape;
  if (out?.length) return { what: `"${output!.name}" without its last dim`, dims: out.slice(0, -1) };
  if (c.indices.source === 'graph-input' && !c.indices.via.some((op) => RESHAPING.has(op))) {
    const input = findInput(c.node.graph!, c.indices.input!);
    if (input?.shape) return { what: `"${input.name}"`, dims: input.shape };
  }
  return undefined;
}
const RESHAPING = new Set(['Reshape', 'Unsqueeze', 'Squeeze', 'Flatten', 'Expand', 'Slice', 'Concat', '…']);

/**
 * Dim names generated by tools rather than chosen by the exporter's author: two different ones say
 * nothing about whether the sizes differ (torch names each input's dynamic axes apart).
 */
const GENERATED_DIM = /^(unk__\d+|s\d+|\d+|\?|None)$|_dynamic_axes_\d+$/;

/**
 * How `other` does not fit the ids' shape. `clear` when it cannot fit: another rank, different
 * fixed sizes, or different dim names both chosen by the exporter (distinct names mark distinct
 * axes, e.g. an encoder mask [batch, source_tokens] against decoder ids [batch, target_tokens]).
 * Otherwise (a name against a size, a generated name, an unknown dim) the sizes may agree at run
 * time: not clear, a warning.
 */
function shapeMismatch(ids: Dims, other: Dims): { clear: boolean; detail: string } | undefined {
  if (ids.length !== other.length) return { clear: true, detail: `it has rank ${other.length}, the ids rank ${ids.length}` };
  let unsure: { clear: boolean; detail: string } | undefined;
  for (let i = 0; i < ids.length; i++) {
    const a = ids[i], b = other[i];
    if (a === b && a !== undefined && a !== '') continue;
    const detail = `dim ${i} is ${formatDim(b)} where the ids have ${formatDim(a)}`;
    if (typeof a === 'number' && typeof b === 'number') return { clear: true, detail };
    if (typeof a === 'string' && typeof b === 'string' && a && b && !GENERATED_DIM.test(a) && !GENERATED_DIM.test(b)) return { clear: true, detail };
    unsure ??= { clear: false, detail };
  }
  return unsure;
}

const formatDim = (d: number | string | undefined): string => (typeof d === 'number' ? String(d) : d ? `"${d}"` : '?');
const formatDims = (dims: Dims): string => `[${dims.map((d) => (typeof d === 'number' ? String(d) : d || '?')).join(', ')}]`;

/**
 * The mask (or position ids) is read per token of the lookup: it must have the ids' shape, or
 * ONNX Runtime fails inside the inserted Mul at run time. A clear mismatch is refused; a doubt
 * (no declared shape, names that may still agree) is a warning.
 */
function checkCompanionShape(c: EmbeddingCandidate, graph: Graph, ids: { what: string; dims: Dims } | undefined, input: Value, what: 'mask' | 'position ids', warn: (w: string) => void): void {
  const option = what === 'mask' ? 'maskInput (--mask-input)' : 'positionIdsInput (--position-ids-input)';
  const shape = input.shape;
  const consequence = 'if the sizes differ at run time, ONNX Runtime fails inside the inserted Mul';
  // Warnings name the values, not the lookup: sites sharing ids and mask share one warning.
  const idsText = ids ? `the token ids ${ids.what} ${formatDims(ids.dims)}` : 'the token ids';
  if (!ids || !shape) {
    warn(`Cannot check the ${what} input "${input.name}"${shape ? ` ${formatDims(shape)}` : ''} against ${idsText}: ${!shape ? `"${input.name}" has no declared shape` : `the ids' shape at ${c.nodeLabel} is not declared`}; ${consequence}.`);
    return;
  }
  const mismatch = shapeMismatch(ids.dims, shape);
  if (!mismatch) return;
  if (!mismatch.clear) {
    warn(`The ${what} input "${input.name}" ${formatDims(shape)} may not fit ${idsText}: ${mismatch.detail}; ${consequence}.`);
    return;
  }
  const head = `The ${what} input "${input.name}" is ${formatDims(shape)}, but the token ids of ${c.nodeLabel} (${ids.what}) are ${formatDims(ids.dims)}: ${mismatch.detail}`;
  const fitting: string[] = [];
  const pattern = what === 'mask' ? /mask/i : /position/i;
  for (let g: Graph | null = graph; g; g = g.parentScope) {
    for (const v of g.inputs) if (v !== input && pattern.test(v.name) && v.shape && !shapeMismatch(ids.dims, v.shape)) fitting.push(`"${v.name}" ${formatDims(v.shape)}`);
  }
  throw new PatchOptionError(`${head}. The ${what} is read per token of this lookup, so it must have the ids' shape; ONNX Runtime would fail inside the inserted Mul. `
    + `Name the ${what} input that belongs to these ids with ${option}${fitting.length ? ` (fitting: ${fitting.slice(0, 5).join(', ')})` : ''}. `
    + 'If the two dims are in fact the same size at run time, give them one name in the model.');
}

function emitSite(plan: SitePlan, opts: PatchRecord['options'], names: NameAllocator, opset: number, alphaInput: Value | undefined): PatchedSite {
  const { candidate: c, siteNode, type } = plan;
  const graph = siteNode.graph!;
  const original = siteNode.outputs[0]!;
  const clean = new Value(names.fresh(`${RESERVED_PREFIX}${original.name}__clean`));
  siteNode.replaceOutput(0, clean);
  const e = new Emitter(graph, siteNode, names, chainPrefix(original.name), opset);
  emitNoise(e, clean, original, { mode: opts.mode, type, alpha: opts.alpha, seed: opts.seed, alphaInput, mask: plan.mask, positions: plan.positions });
  return {
    graphPath: c.graphPath, lookup: c.nodeLabel, table: c.table.name, role: c.role,
    value: original.name, clean: clean.name, dtype: dataTypeName(type), afterScale: plan.afterScale,
    maskInput: plan.mask?.name ?? null, positionIdsInput: plan.positions?.name ?? null,
    addedNodes: e.added.map((n) => n.name!),
  };
}

/** The prefix of every node and value name the patch adds for the site writing `value`. */
const chainPrefix = (value: string): string => `${RESERVED_PREFIX}${safe(value)}__`;

interface NoiseSpec {
  mode: NeftuneMode;
  type: DataType;
  alpha: number;
  seed: number | undefined;
  alphaInput: Value | undefined;
  mask: Value | undefined;
  positions: Value | undefined;
}

/**
 * Emits the noise chain from `clean` to `original`. The one definition of what a patch adds:
 * strip recognises a site by matching this same emission (see `chainTemplate`).
 * Returns the alpha value (the alpha input, or the output of the alpha Constant).
 */
function emitNoise(e: Emitter, clean: Value, original: Value, spec: NoiseSpec): Value {
  const { type } = spec;
  const alpha = spec.alphaInput ?? e.scalarFloat(spec.alpha, 'alpha');
  const shape = e.op('Shape', [clean], {}, 'shape');

  // ORT's RandomUniformLike takes float/double/fp16 inputs; for bf16 it gets a float tensor of the same shape.
  const uniformInput = type === DataType.BFLOAT16 ? e.op('ConstantOfShape', [shape], {}, 'zeros') : clean;
  const uniformAttrs: Record<string, ReturnType<typeof attr.float>> = { dtype: attr.int(DataType.FLOAT), low: attr.float(-1), high: attr.float(1) };
  if (spec.seed !== undefined) uniformAttrs['seed'] = attr.float(spec.seed);
  const uniform = e.op('RandomUniformLike', [uniformInput], uniformAttrs, 'uniform');

  let noise: Value;
  if (spec.mode === 'hf') {
    const lastTwo = e.cast(e.sliceTail(shape, -2, 'last_two_dims'), DataType.FLOAT, 'last_two_dims_float');
    const ld = e.reduceProd(lastTwo, 'L_times_d');
    const scale = e.op('Div', [alpha, e.op('Sqrt', [ld], {}, 'sqrt_L_times_d')], {}, 'scale');
    noise = e.op('Mul', [uniform, scale], {}, 'noise');
  } else {
    const maskF = spec.mask ? e.cast(spec.mask, DataType.FLOAT, 'mask_float')
      // No mask input (packed rows without padding): every position is a real token.
      : e.cast(e.op('Equal', [spec.positions!, spec.positions!], {}, 'all_tokens'), DataType.FLOAT, 'mask_float');
    const d = e.cast(e.sliceTail(shape, -1, 'd'), DataType.FLOAT, 'd_float');
    let lengths: Value;
    if (spec.mode === 'mask') {
      lengths = e.reduceSum(maskF, [1], true, 'row_lengths');
    } else {
      const positions64 = e.cast(spec.positions!, DataType.INT64, 'position_ids_i64');
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
  return alpha;
}

/** The default-domain opset a patch adds to a model that imports none (contrib ops only). */
function addedOpsetVersion(irVersion: number, mode: NeftuneMode): number {
  // The newest opset the IR version allows, capped where ONNX Runtime support is broad.
  return Math.max(MIN_OPSET[mode], Math.min(21, maxOpsetForIrVersion(irVersion)));
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

/** Backward ops or gradient outputs mark a training graph. */
export function looksLikeTrainingGraph(model: Model): boolean {
  for (const g of model.allGraphs()) {
    for (const n of g) {
      if (/Grad$|Grad_|Gradient|InPlaceAccumulator|SoftmaxCrossEntropyLossInternal|Optimizer$/.test(n.opType)) return true;
      if (n.opType === 'ATen' && /_backward$/.test(n.attributeValue<string>('operator', ''))) return true;
      if (n.opType === 'ATenOp' && /_backward$/.test(n.attributeValue<string>('name', ''))) return true;
    }
  }
  return model.graph.outputs.some((o) => /_grad(\b|_|\.)/.test(o.name)) || model.graph.inputs.some((i) => /_grad\.accumulation/.test(i.name));
}

/**
 * Removes everything a NEFTune patch added and gives each lookup its original output back, so the
 * model encodes to its pre-patch bytes. Only nodes recognised by structure are removed: each
 * recorded site must be the exact chain the patch emits, and every claim of the metadata record
 * (names, options, added graph inputs, added opset import) must hold in the graph. When the record
 * and the graph disagree, throws PatchMismatchError and changes nothing. Without a readable record
 * (lost, or malformed: see readPatchRecord), the sites are found by structure alone and stripped
 * only when every match is exact; the default-domain opset import is then kept. A model without a
 * patch (nodes merely named `neftune__...` do not make one) is left alone (modified: false).
 */
export function stripNeftune(model: Model): StripResult {
  const plan = planStrip(model);
  if (isString(plan)) return { model, modified: false, message: plan, removedNodes: 0, restoredValues: [] };
  let removed = 0;
  for (const chain of plan.chains) {
    for (const node of chain.nodes) { node.graph!.remove(node, { force: true }); removed++; }
  }
  for (const chain of plan.chains) chain.site.replaceOutput(0, chain.value);
  for (const input of plan.inputs) {
    const i = model.graph.inputs.indexOf(input);
    model.graph.inputs.splice(i, 1);
    if (model.graph.scope.get(input.name) === input) model.graph.scope.delete(input.name);
  }
  if (plan.removeOpsetImport) {
    const list = model.proto.opset_import!;
    list.splice(list.findIndex(isDefaultDomainImport), 1);
    if (!list.length) delete model.proto.opset_import;
  }
  while (model.metadata.delete(PATCH_METADATA_KEY));
  return {
    model, modified: true, removedNodes: removed, restoredValues: plan.chains.map((c) => c.value.name),
    message: `Removed ${removed} node(s) and restored ${plan.chains.length} embedding output(s)${plan.note}.`,
  };
}

interface StripPlan { chains: ChainMatch[]; inputs: Value[]; removeOpsetImport: boolean; note: string }

const MISMATCH_ADVICE = 'Nothing was changed. If the model was edited after patching, strip the file saved by the patch, or patch the clean model again. '
  + `If only the record is wrong and the patch nodes are intact, delete the metadata entry "${PATCH_METADATA_KEY}": strip then recognises the patch from the graph alone.`;

function mismatch(reason: string): PatchMismatchError {
  return new PatchMismatchError(`Cannot strip the NEFTune patch: ${reason}. ${MISMATCH_ADVICE}`);
}

/** What strip will remove, checked in full before anything changes; a string means nothing to strip. */
function planStrip(model: Model): StripPlan | string {
  const state = recordState(model);
  if (state.kind === 'conflicting') {
    throw mismatch(`the model has ${state.count} metadata entries "${PATCH_METADATA_KEY}" with different contents, so which patch was applied is unknown`);
  }
  const marked = markedNodes(model);
  if (state.kind === 'valid') return planFromRecord(model, state.record, marked);
  // No usable record: find the sites by structure. Only exact chains are stripped.
  const found = findChains(model, marked);
  const unreadable = state.kind === 'malformed' ? ` (the metadata entry "${PATCH_METADATA_KEY}" is unreadable: ${state.reason}; left as is)` : '';
  if (!found.length) return `Nothing to strip: the model carries no NEFTune patch${unreadable}.`;
  const inexact = found.find((f) => isString(f.problem));
  if (inexact) throw mismatch(`${inexact.chain.root.describe()} heads a chain shaped like a NEFTune patch, but ${inexact.problem}`);
  const chains = found.map((f) => f.chain);
  const claimed = claimChains(chains);
  const unexplained = marked.filter((n) => !claimed.has(n));
  if (unexplained.length) {
    throw mismatch(`the patch record is ${state.kind === 'malformed' ? `unreadable (${state.reason})` : 'missing'} and ${describeNodes(unexplained)} named with the reserved prefix ${unexplained.length === 1 ? 'is' : 'are'} not part of any recognised site, so the patch cannot be told apart from the model's own nodes`);
  }
  const inputs = uniqueAlphaInputs(chains);
  for (const input of inputs) {
    const problem = addedInputProblem(model, input, claimed);
    if (problem) throw mismatch(problem);
  }
  return { chains, inputs, removeOpsetImport: false, note: ` (the metadata record was ${state.kind === 'malformed' ? `unreadable: ${state.reason}` : 'missing'}; found the patch by its structure)` };
}

function planFromRecord(model: Model, record: PatchRecord, marked: Node[]): StripPlan {
  const opset = model.opsetVersion('');
  if (opset === undefined) throw mismatch(`the record lists ${record.sites.length} site(s) but the model imports no default-domain opset, which every patch has`);
  const byName = new Map<string, Node[]>();
  for (const n of marked) byName.set(n.name!, [...(byName.get(n.name!) ?? []), n]);
  const opts = record.options;
  const alphaName = opts.alphaInput ? (isString(opts.alphaInput) ? opts.alphaInput : DEFAULT_ALPHA_INPUT) : undefined;
  const chains: ChainMatch[] = [];
  record.sites.forEach((site, i) => {
    const where = `site ${i + 1} of ${record.sites.length} ("${site.value}")`;
    const rootName = site.addedNodes.at(-1)!;
    const roots = byName.get(rootName) ?? [];
    if (roots.length !== 1) {
      throw mismatch(`${where}: the record's last added node "${rootName}" ${!rootName.startsWith(RESERVED_PREFIX) ? `is not named with the reserved prefix ${RESERVED_PREFIX}` : roots.length ? `is in the model ${roots.length} times` : 'is not in the model'}`);
    }
    const root = roots[0]!;
    if (root.outputs[0]?.name !== site.value) throw mismatch(`${where}: ${root.describe()} writes ${root.outputs[0]?.name ?? 'nothing'}, not ${site.value}`);
    const variant = VARIANTS.find((v) => v.mode === opts.mode && v.withMask === (site.maskInput !== null) && v.withPositions === (site.positionIdsInput !== null));
    if (!variant) throw mismatch(`${where}: mode ${opts.mode} with mask input ${site.maskInput} and position ids ${site.positionIdsInput} is not a form the patch emits`);
    const template = chainTemplate(opset, variant, parseDataType(site.dtype), alphaName === undefined ? 'constant' : 'input');
    const result = matchChain(model, template, root);
    if (isString(result)) throw mismatch(`${where}: ${result}`);
    if (isString(result.problem)) throw mismatch(`${where}: ${result.problem}`);
    const chain = result.chain;
    const names = chain.nodes.map((n) => n.name ?? '');
    const differs = names.findIndex((n, j) => n !== site.addedNodes[j]);
    if (names.length !== site.addedNodes.length || differs >= 0) {
      throw mismatch(`${where}: the record lists ${site.addedNodes.length} added node(s), the graph's chain has ${names.length}${differs >= 0 ? `; the record names "${site.addedNodes[differs]}" where the graph has "${names[differs]}"` : ''}`);
    }
    const claims: Array<[string, unknown, unknown]> = [
      ['clean value', site.clean, chain.clean.name],
      ['mask input', site.maskInput, chain.mask?.name ?? null],
      ['position ids input', site.positionIdsInput, chain.positions?.name ?? null],
      ['alpha input', alphaName ?? null, chain.alphaInput?.name ?? null],
      ['alpha', alphaName === undefined ? Math.fround(opts.alpha) : null, chain.alpha ?? null],
      ['seed', opts.seed === undefined ? null : Math.fround(opts.seed), chain.seed ?? null],
      ['noise after a scale Mul', site.afterScale, chain.site.opType === 'Mul'],
    ];
    for (const [what, recorded, actual] of claims) {
      if (recorded !== actual) throw mismatch(`${where}: the record says ${what} ${JSON.stringify(recorded)}, the graph has ${JSON.stringify(actual)}`);
    }
    chains.push(chain);
  });
  const claimed = claimChains(chains);
  const userNodes = new Set(record.userNodes ?? []);
  const unexplained = marked.filter((n) => !claimed.has(n) && !userNodes.has(n.name!));
  if (unexplained.length) {
    throw mismatch(`${describeNodes(unexplained)} named with the reserved prefix ${unexplained.length === 1 ? 'is' : 'are'} in no recorded site (the record does not describe the whole patch)`);
  }
  const inputs = uniqueAlphaInputs(chains);
  const listed = record.added.graphInputs;
  if (listed.length !== inputs.length || inputs.some((v) => !listed.includes(v.name))) {
    throw mismatch(`the record lists added graph inputs [${listed.join(', ')}], but the patch's nodes read [${inputs.map((v) => v.name).join(', ')}]`);
  }
  for (const input of inputs) {
    const problem = addedInputProblem(model, input, claimed);
    if (problem) throw mismatch(problem);
  }
  if (record.added.opsetImport) {
    const problem = opsetImportProblem(model, claimed, opts.mode);
    if (problem) throw mismatch(problem);
  }
  return { chains, inputs, removeOpsetImport: record.added.opsetImport, note: '' };
}

/** The nodes of all chains, refusing chains that share a node. */
function claimChains(chains: ChainMatch[]): Set<Node> {
  const claimed = new Set<Node>();
  for (const chain of chains) {
    for (const n of chain.nodes) {
      if (claimed.has(n)) throw mismatch(`two sites share ${n.describe()}`);
      claimed.add(n);
    }
  }
  return claimed;
}

function uniqueAlphaInputs(chains: ChainMatch[]): Value[] {
  return [...new Set(chains.flatMap((c) => (c.alphaInput ? [c.alphaInput] : [])))];
}

function describeNodes(nodes: Node[]): string {
  const shown = nodes.slice(0, 5).map((n) => n.describe()).join(', ');
  return `${nodes.length} node(s) (${shown}${nodes.length > 5 ? ', ...' : ''})`;
}

/** Why `input` cannot be an alpha input the patch added (a main-graph float scalar only the patch reads), if it cannot. */
function addedInputProblem(model: Model, input: Value, claimed: Set<Node>): string | undefined {
  const what = `graph input ${input.name}`;
  if (model.graph.inputs.filter((v) => v.name === input.name).length !== 1) return `${what} is not declared exactly once`;
  if (input.initializer || input.sparseInitializer) return `${what} has an initializer, so the patch did not add it`;
  if (input.isGraphOutput) return `${what} is also a graph output`;
  if (input.elemType !== DataType.FLOAT || input.shape?.length !== 0) return `${what} is not a float scalar, so the patch did not add it`;
  const reader = input.uses.find((u) => !claimed.has(u.node));
  if (reader) return `${what} is also read by ${reader.node.describe()}, outside the patch`;
  return undefined;
}

const isDefaultDomainImport = (o: { domain?: string }): boolean => (o.domain ?? '') === '' || o.domain === 'ai.onnx';

/**
 * Why the record's claim that the patch added the default-domain opset import cannot be honoured,
 * if it cannot. Honoured when no node left after strip uses the default domain; or when the
 * import is exactly the one a patch adds (the last entry, at the version the patch picks for this
 * IR version and mode): a model of default-domain ops without the import (ONNX Runtime fills it
 * in) round-trips, while a false claim on a model that had its own import is refused.
 */
function opsetImportProblem(model: Model, removed: Set<Node>, mode: NeftuneMode): string | undefined {
  const list = model.proto.opset_import ?? [];
  const defaults = list.filter(isDefaultDomainImport);
  const claim = 'the record says the patch added the default-domain opset import';
  if (defaults.length !== 1 || (defaults[0]!.domain ?? '') !== '') return `${claim}, but the model has ${defaults.length} default-domain import(s)`;
  let users = 0;
  let example: Node | undefined;
  for (const g of model.allGraphs()) {
    for (const n of g) if (!removed.has(n) && (n.domain === '' || n.domain === 'ai.onnx')) { users++; example ??= n; }
  }
  if (!users) return undefined;
  const version = int64ToNumber(defaults[0]!.version);
  const expected = addedOpsetVersion(model.irVersion, mode);
  if (defaults[0] === list.at(-1) && version === expected) return undefined;
  return `${claim} (ai.onnx ${version}), but ${users} node(s) left after strip use that domain (e.g. ${example!.describe()}) and it is not the import a patch adds (the last entry, version ${expected} for IR version ${model.irVersion})`;
}

// ---------- Recognising the chain a patch emits ----------

interface Variant { mode: NeftuneMode; withMask: boolean; withPositions: boolean }
/** Every input form of the noise chain: hf reads neither; mask reads the mask; packed reads positions, and the mask when present. */
const VARIANTS: readonly Variant[] = [
  { mode: 'hf', withMask: false, withPositions: false },
  { mode: 'mask', withMask: true, withPositions: false },
  { mode: 'packed', withMask: true, withPositions: true },
  { mode: 'packed', withMask: false, withPositions: true },
];
type AlphaForm = 'constant' | 'input';

/** The chain `emitNoise` produces for one form, on placeholder values, in emission order. */
interface ChainTemplate {
  nodes: Node[];
  root: Node;
  clean: Value;
  mask: Value | undefined;
  positions: Value | undefined;
  alphaInput: Value | undefined;
  alphaConstant: Node | undefined;
  externals: Set<Value>;
}

const templates = new Map<string, ChainTemplate>();

/** Built by running `emitNoise` itself, so recognition can never drift from what the patch emits. */
function chainTemplate(opset: number, variant: Variant, type: DataType, alphaForm: AlphaForm): ChainTemplate {
  const key = `${opset}|${variant.mode}|${variant.withMask}|${type}|${alphaForm}`;
  const cached = templates.get(key);
  if (cached) return cached;
  const graph = new Graph({});
  const clean = new Value('clean');
  const anchor = new Node('Lookup', [], [clean]);
  graph.append(anchor);
  const input = (name: string) => graph.addInput(new Value(name));
  const mask = variant.withMask ? input('mask') : undefined;
  const positions = variant.withPositions ? input('positions') : undefined;
  const alphaInput = alphaForm === 'input' ? input('alpha') : undefined;
  const e = new Emitter(graph, anchor, new NameAllocator(new Model({}, graph)), 'template__', opset);
  const alpha = emitNoise(e, clean, new Value('value'), { mode: variant.mode, type, alpha: 1, seed: undefined, alphaInput, mask, positions });
  const template: ChainTemplate = {
    nodes: e.added, root: e.added.at(-1)!, clean, mask, positions, alphaInput,
    alphaConstant: alphaInput ? undefined : alpha.producer!,
    externals: new Set([clean, mask, positions, alphaInput].filter((v): v is Value => v !== undefined)),
  };
  templates.set(key, template);
  return template;
}

/** A chain in the model matched to a template. */
interface ChainMatch {
  root: Node;
  /** The chain's nodes in emission order. */
  nodes: Node[];
  /** The site's value (written by the root) and the clean value the lookup or scale Mul writes now. */
  value: Value;
  clean: Value;
  site: Node;
  mask: Value | undefined;
  positions: Value | undefined;
  alphaInput: Value | undefined;
  /** The alpha Constant's value (float32), when alpha is not an input. */
  alpha: number | undefined;
  seed: number | undefined;
}

/** Ops whose first output a patch renames to the clean value: the lookups, or a scale Mul. */
const SITE_OPS = new Set(['Gather', 'GatherBlockQuantized', 'ATen', 'ATenOp', 'Mul']);

/**
 * Matches the chain ending at `root` against `template`: op types, domains, attributes and
 * wiring, walking back from the root. A string says why it does not have the template's shape.
 * A chain with the shape is returned with `problem` set when it is not exactly what the patch
 * leaves: names without the site's prefix, values read outside the chain, a clean value not
 * written by a lookup, inputs that are not graph inputs.
 */
function matchChain(model: Model, template: ChainTemplate, root: Node): { chain: ChainMatch; problem: string | undefined } | string {
  const graph = root.graph!;
  const nodeMap = new Map<Node, Node>();
  const claimed = new Set<Node>();
  const valueMap = new Map<Value, Value>();
  let failure: string | undefined;
  const fail = (reason: string): false => { failure ??= reason; return false; };
  const pair = (t: Node, a: Node): boolean => {
    const known = nodeMap.get(t);
    if (known) return known === a || fail(`${a.describe()} is where the patch has ${known.describe()}`);
    if (claimed.has(a)) return fail(`${a.describe()} appears twice in the chain`);
    if (a.graph !== graph) return fail(`${a.describe()} is in another graph than ${root.describe()}`);
    if (a.opType !== t.opType || a.domain !== t.domain) return fail(`the patch has a ${t.opType} where the graph has ${a.describe()}`);
    if (a.inputs.length !== t.inputs.length || a.outputs.length !== 1 || !a.outputs[0]) {
      return fail(`${a.describe()} has ${a.inputs.length} input(s) and ${a.outputs.length} output(s); the patch's ${t.opType} has ${t.inputs.length} and 1`);
    }
    const attributeProblem = compareAttributes(t, a, template);
    if (attributeProblem) return fail(`${a.describe()}: ${attributeProblem}`);
    nodeMap.set(t, a);
    claimed.add(a);
    for (let i = 0; i < t.inputs.length; i++) {
      const tv = t.inputs[i]!, av = a.inputs[i];
      if (!av) return fail(`${a.describe()} has no input ${i}`);
      const bound = valueMap.get(tv);
      if (bound) {
        if (bound !== av) return fail(`${a.describe()} reads ${av.name} as input ${i} where the patch reads ${bound.name}`);
        continue;
      }
      valueMap.set(tv, av);
      if (template.externals.has(tv)) {
        // The mask, position ids and alpha input are graph inputs: nothing writes them.
        if (tv !== template.clean && av.producer && !av.producer.isRemoved) return fail(`${a.describe()} reads ${av.name}, written by ${av.producer.describe()}, where the patch reads a graph input`);
        continue;
      }
      const producer = av.producer;
      if (!producer || producer.isRemoved || av.producerIndex !== tv.producerIndex) {
        return fail(`${a.describe()} input ${i} (${av.name}) is not written by a ${tv.producer!.opType} of the patch`);
      }
      if (!pair(tv.producer!, producer)) return false;
    }
    return true;
  };
  if (!pair(template.root, root)) return failure!;
  if (nodeMap.size !== template.nodes.length) return `${root.describe()} heads only part of a patch chain`;
  const nodes = template.nodes.map((t) => nodeMap.get(t)!);
  const value = root.outputs[0]!;
  const clean = valueMap.get(template.clean)!;
  const alphaConstant = template.alphaConstant && nodeMap.get(template.alphaConstant);
  const uniform = nodes.find((n) => n.opType === 'RandomUniformLike')!;
  const chain: ChainMatch = {
    root, nodes, value, clean, site: clean.producer!,
    mask: template.mask && valueMap.get(template.mask), positions: template.positions && valueMap.get(template.positions),
    alphaInput: template.alphaInput && valueMap.get(template.alphaInput),
    alpha: alphaConstant ? scalarOf(alphaConstant.attribute('value')!) : undefined,
    seed: uniform.attribute('seed') ? uniform.attributeValue<number>('seed') : undefined,
  };
  return { chain, problem: chainProblem(model, chain, claimed) };
}

function chainProblem(model: Model, chain: ChainMatch, claimed: Set<Node>): string | undefined {
  const { root, nodes, value, clean } = chain;
  const graph = root.graph!;
  const prefix = chainPrefix(value.name);
  const unmarked = nodes.find((n) => !n.name?.startsWith(prefix));
  if (unmarked) return `${unmarked.describe()} in the chain is not named with the patch's prefix ${prefix}`;
  const site = clean.producer;
  if (!site || site.isRemoved || claimed.has(site) || site.graph !== graph || clean.producerIndex !== 0 || !SITE_OPS.has(site.opType)) {
    return `the clean value ${clean.name} is not the first output of a lookup or scale Mul in the chain's graph`;
  }
  if (!clean.name.startsWith(`${RESERVED_PREFIX}${value.name}__clean`)) return `the clean value ${clean.name} is not named as the patch names it`;
  for (const v of [clean, ...nodes.filter((n) => n !== root).map((n) => n.outputs[0]!)]) {
    if (v !== clean && !v.name.startsWith(prefix)) return `value ${v.name} in the chain is not named with the patch's prefix ${prefix}`;
    const reader = v.uses.find((u) => !claimed.has(u.node));
    if (reader) return `value ${v.name} is also read by ${reader.node.describe()}, outside the patch`;
    if (v.isGraphOutput) return `value ${v.name} is a graph output`;
  }
  for (const v of [chain.mask, chain.positions]) {
    if (v && findInput(graph, v.name) !== v) return `${v.name}, read by the chain, is not a graph input`;
  }
  const alpha = chain.alphaInput;
  if (alpha && !(alpha.graph === model.graph && alpha.isGraphInput)) return `the alpha value ${alpha.name} is not an input of the main graph`;
  return undefined;
}

/** Why node `a` does not carry the attributes the patch gives template node `t`, if it does not. */
function compareAttributes(t: Node, a: Node, template: ChainTemplate): string | undefined {
  const actual = new Map<string, Attribute>();
  for (const at of a.attributes) {
    if (actual.has(at.name)) return `attribute ${at.name} appears twice`;
    actual.set(at.name, at);
  }
  if (t === template.alphaConstant) {
    const v = actual.get('value');
    const alpha = v && actual.size === 1 ? scalarOf(v) : undefined;
    return alpha !== undefined && Number.isFinite(alpha) && alpha > 0 ? undefined : 'not a Constant holding a float scalar alpha > 0';
  }
  let expected = t.attributes.length;
  const seed = t.opType === 'RandomUniformLike' ? actual.get('seed') : undefined;
  if (seed) {
    const s = seed.kind === 'FLOAT' ? seed.value as number : NaN;
    if (!Number.isInteger(s) || Math.abs(s) > 2 ** 24) return 'seed is not an integer float';
    expected++;
  }
  if (actual.size !== expected) return `has attributes [${[...actual.keys()].join(', ')}], the patch's ${t.opType} has [${t.attributes.map((x) => x.name).join(', ')}]`;
  for (const ta of t.attributes) {
    const aa = actual.get(ta.name);
    if (!aa || !sameEncoding(ta, aa)) return `attribute ${ta.name} is not the one the patch writes`;
  }
  return undefined;
}

function sameEncoding(x: Attribute, y: Attribute): boolean {
  if (x.graphs.length || y.graphs.length) return false;
  try {
    const ex = AttributeProtoType.encode(x.proto as never).finish();
    const ey = AttributeProtoType.encode(y.proto as never).finish();
    return ex.length === ey.length && ex.every((b, i) => b === ey[i]);
  } catch {
    return false;
  }
}

/** The value of a TENSOR attribute holding a float32 scalar; undefined for anything else. */
function scalarOf(a: Attribute): number | undefined {
  try {
    const t = a.kind === 'TENSOR' ? a.value as Tensor | undefined : undefined;
    if (!t || t.dataType !== DataType.FLOAT || t.dims.length !== 0 || t.storage === 'external') return undefined;
    const values = t.toArray() as Float32Array;
    return values.length === 1 ? values[0] : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Chains shaped like a patch, from every prefix-named Add or Cast (the node a patch writes the
 * site's value with), each with the problem that keeps it from being exact, if any.
 */
function findChains(model: Model, marked: Node[]): Array<{ chain: ChainMatch; problem: string | undefined }> {
  const opset = model.opsetVersion('');
  if (opset === undefined) return [];
  const found: Array<{ chain: ChainMatch; problem: string | undefined }> = [];
  for (const root of marked) {
    if (root.opType !== 'Add' && root.opType !== 'Cast') continue;
    // The forms differ in structure, so at most one should fit; an exact fit wins over an inexact one.
    let best: { chain: ChainMatch; problem: string | undefined } | undefined;
    for (const variant of VARIANTS) {
      for (const type of NOISE_TYPES) {
        for (const alphaForm of ['constant', 'input'] as const) {
          const result = matchChain(model, chainTemplate(opset, variant, type, alphaForm), root);
          if (!isString(result) && (!best || (best.problem !== undefined && result.problem === undefined))) best = result;
        }
      }
    }
    if (best) found.push(best);
  }
  return found;
}
