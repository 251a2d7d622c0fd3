/**
 * Finds embedding lookups and says what each one is. An analysis on its own: nothing changes.
 * A candidate is a lookup into a 2-D table (Gather on axis 0, com.microsoft GatherBlockQuantized,
 * ATen `embedding`, com.microsoft ATenOp `aten::embedding`) or a fused EmbedLayerNormalization
 * (reported, never patchable).
 */
import { DataType, dataTypeBits, dataTypeName, isFloatingType } from '../graph/dtype.js';
import { deferredPayloadOf } from '../graph/deferred.js';
import { OnnxNeftuneError } from '../graph/errors.js';
import { Tensor } from '../graph/tensor.js';
import type { Dim, Graph, Model, Node, Value } from '../graph/ir.js';

export type LookupKind = 'Gather' | 'GatherBlockQuantized' | 'ATen.embedding' | 'ATenOp.embedding' | 'EmbedLayerNormalization';
export type TableStorage = 'initializer' | 'graph-input' | 'initializer+graph-input' | 'constant-node' | 'unknown';
export type EmbeddingRole = 'token' | 'position' | 'token_type' | 'other';
export type IndicesSource = 'graph-input' | 'position-computation' | 'constant' | 'other';

export interface TableInfo {
  /** The stored table's name (before any Cast/DequantizeLinear/Identity). */
  name: string;
  value: Value;
  storage: TableStorage;
  /** True when the table is defined in an enclosing graph of the lookup's graph. */
  outerScope: boolean;
  /** Ops between the stored table and the lookup, nearest the lookup first. */
  via: string[];
  rows: number | undefined;
  dim: number | undefined;
  /** Element type of the stored table. */
  dataType: DataType | undefined;
}

export interface IndicesInfo {
  source: IndicesSource;
  /**
   * The graph input the indices come from (source `graph-input`): the token-id input when one is
   * reached, else the first other input (mask, position or segment ids) reached.
   */
  input: string | undefined;
  /** Ops from the lookup back to the source, nearest the lookup first. */
  via: string[];
  /**
   * How the indices are computed, when they pass an element-wise op (Mul, Add, Where, ...), e.g.
   * `input_ids * attention_mask` or `(input_ids * attention_mask) + token_type_ids`; reshapes and
   * casts are not shown, and past a few operators the rest is `…`. Undefined for plain (reshaped) inputs.
   */
  derivation: string | undefined;
}

export interface EmbeddingCandidate {
  node: Node;
  /** Node name, or a generated description when the node has none. */
  nodeLabel: string;
  /** Where the node sits: ['main'] or e.g. ['main', 'BeamSearch "bs".decoder']. */
  graphPath: string[];
  kind: LookupKind;
  table: TableInfo;
  indices: IndicesInfo;
  /** Element type of the lookup's output (what noise is added in). */
  outputType: DataType | undefined;
  role: EmbeddingRole;
  reasons: string[];
  patchable: boolean;
  notPatchableReason: string | undefined;
  /**
   * What is malformed where this lookup reads the model (table dims or payload size, non-integer
   * indices, no output). Such a candidate is never patchable; patching it is refused as an invalid model.
   */
  invalidReason: string | undefined;
  /** A scalar scale Mul right after the lookup (Gemma's sqrt(d)), possibly behind one Cast. */
  scale: { node: Node; factor: number | undefined; invalidReason?: string } | undefined;
}

/** A lookup-like node that is not a candidate, and why (so a refused model can be understood). */
export interface NearMiss {
  node: string;
  graphPath: string[];
  reason: string;
}

export interface EmbeddingReport {
  candidates: EmbeddingCandidate[];
  /** Candidates of the default target (token table), empty when there is none or it is ambiguous. */
  defaultTarget: EmbeddingCandidate[];
  /** Why the default target was chosen, or why none could be. */
  targetReason: string;
  ambiguous: boolean;
  nearMisses: NearMiss[];
}

const PASS_THROUGH_TABLE = new Set(['Identity', 'Cast', 'DequantizeLinear']);
/** Ops that move or retype their first input; the other inputs are shapes, axes or bounds, not ids. */
const SHAPE_ONLY_INDICES = new Set(['Identity', 'Cast', 'Reshape', 'Unsqueeze', 'Squeeze', 'Flatten', 'Slice', 'Expand']);
/** Integer element-wise ops token ids pass through (exporters zero padding with `ids * mask`), as written in derivations. */
const INFIX_INDICES: ReadonlyMap<string, string> = new Map([['Mul', '*'], ['Add', '+'], ['Sub', '-'], ['Mod', '%']]);
const FUNCTION_INDICES = new Set(['Min', 'Max', 'Where', 'Clip', 'Concat']);
const POSITION_OPS = new Set(['Range', 'CumSum']);
const MASK_NAME = /mask/i;
/** The default-domain opset the noise ops need in the default mode (hf); ONNX Runtime runs opset 7 and newer only. */
export const NOISE_MIN_OPSET = 7;
/** Operators shown in a derivation before the rest is abbreviated. */
const DERIVATION_OPS = 4;
/** Entries of `via` listed before the path is abbreviated (the source's op is always kept). */
const VIA_LISTED = 32;
const ROTARY_NAME = /rotary|cos_cache|sin_cache|cos_cached|sin_cached|inv_freq|\bcos\b|\bsin\b/i;
const POSITION_NAME = /position|(^|[._/])pos([._/]|_?emb|_?ids|$)|wpe/i;
const TOKEN_TYPE_NAME = /token_type|segment|seg_(ids|emb)|type_ids/i;
/** Ops between indices and a value whose element type they keep. */
const TYPE_PRESERVING_INDICES = new Set(['Identity', 'Reshape', 'Unsqueeze', 'Squeeze', 'Flatten', 'Slice', 'Expand', 'Clip']);
/** Lists in messages stop after this many entries (a hostile model can have hundreds of thousands). */
const LISTED = 10;

/** Op types inspectNode can make a candidate or a near miss of (besides a OneHot's MatMul): the rest of a graph is never built. */
const INSPECTED_OPS: readonly string[] = ['Gather', 'GatherBlockQuantized', 'ATen', 'ATenOp', 'EmbedLayerNormalization'];

export function findEmbeddings(model: Model): EmbeddingReport {
  const candidates: EmbeddingCandidate[] = [];
  const nearMisses: NearMiss[] = [];
  const declared = new DeclarationLookup();
  const context: Context = { declared, tracer: new IndexTracer(declared), nearMisses, opset: model.opsetVersion('') };
  // A MatMul is a near miss only behind a OneHot, which may sit in an enclosing graph: asked for only when the model has one.
  let hasOneHot = false;
  for (const g of model.allGraphs()) if (g.opTypeCounts().has('OneHot')) { hasOneHot = true; break; }
  const opType = hasOneHot ? [...INSPECTED_OPS, 'MatMul'] : INSPECTED_OPS;
  for (const { graph, path } of graphsWithPaths(model)) {
    for (const node of graph.findNodes({ opType })) {
      const candidate = inspectNode(node, path, context);
      if (candidate) candidates.push(candidate);
    }
  }
  const choice = chooseDefaultTarget(candidates);
  return { candidates, ...choice, nearMisses };
}

/**
 * Graph input / output membership as sets, built once per graph: Value.isGraphInput scans the
 * input list, which is quadratic when every table is a graph input (training artifacts).
 */
class DeclarationLookup {
  private readonly inputs = new Map<Graph, Set<Value>>();
  private readonly outputs = new Map<Graph, Set<Value>>();
  isInput(v: Value): boolean { return this.has(this.inputs, v, (g) => g.inputs); }
  isOutput(v: Value): boolean { return this.has(this.outputs, v, (g) => g.outputs); }
  private has(cache: Map<Graph, Set<Value>>, v: Value, list: (g: Graph) => readonly Value[]): boolean {
    const g = v.graph;
    if (!g) return false;
    let set = cache.get(g);
    if (!set) cache.set(g, set = new Set(list(g)));
    return set.has(v);
  }
}

/** `a, b, c and 7 more`: the first few of a possibly huge list. */
function listSome(items: readonly string[], separator = ', ', max = LISTED): string {
  if (items.length <= max) return items.join(separator);
  return `${items.slice(0, max).join(separator)}${separator}... and ${items.length - max} more`;
}

/** Every graph of the model with its path as reported in candidates and patch records. */
export function* graphsWithPaths(model: Model): Iterable<{ graph: Graph; path: string[] }> {
  function* walk(graph: Graph, path: string[]): Iterable<{ graph: Graph; path: string[] }> {
    yield { graph, path };
    for (const node of graph.findNodes({ hasSubgraphs: true })) {
      for (const attr of node.attributes) {
        for (const [i, sub] of attr.graphs.entries()) {
          const label = `${node.describe()}.${attr.name}${attr.graphs.length > 1 ? `[${i}]` : ''}`;
          yield* walk(sub, [...path, label]);
        }
      }
    }
  }
  yield* walk(model.graph, ['main']);
  for (const fn of model.functions) yield* walk(fn.body, [`function ${fn.domain ? `${fn.domain}::` : ''}${fn.name}`]);
  for (const [i, t] of model.trainingInfo.entries()) {
    if (t.initialization) yield* walk(t.initialization, [`training_info[${i}].initialization`]);
    if (t.algorithm) yield* walk(t.algorithm, [`training_info[${i}].algorithm`]);
  }
}

interface Context {
  declared: DeclarationLookup;
  tracer: IndexTracer;
  nearMisses: NearMiss[];
  /** The model's default-domain opset import, if any. */
  opset: number | undefined;
}

/** The ATen operator a node runs: `ATen` names it in `operator`, the older com.microsoft `ATenOp` in `name` (`aten::embedding`). */
function atenOperator(node: Node): string | undefined {
  if (node.opType === 'ATen') return node.attributeValue<string>('operator', '');
  if (node.opType === 'ATenOp' && node.domain === 'com.microsoft') return node.attributeValue<string>('name', '').replace(/^aten::/, '');
  return undefined;
}

function lookupKind(node: Node): LookupKind | undefined {
  if (node.opType === 'Gather' && isDefaultDomain(node.domain)) return 'Gather';
  if (node.opType === 'GatherBlockQuantized' && node.domain === 'com.microsoft') return 'GatherBlockQuantized';
  if (node.opType === 'ATen' && node.attributeValue<string>('operator', '') === 'embedding') return 'ATen.embedding';
  if (node.opType === 'ATenOp' && atenOperator(node) === 'embedding') return 'ATenOp.embedding';
  if (node.opType === 'EmbedLayerNormalization' && node.domain === 'com.microsoft') return 'EmbedLayerNormalization';
  return undefined;
}

const isDefaultDomain = (d: string) => d === '' || d === 'ai.onnx';

function inspectNode(node: Node, graphPath: string[], context: Context): EmbeddingCandidate | undefined {
  const { declared, nearMisses } = context;
  const kind = lookupKind(node);
  if (!kind) {
    const reason = lookupFormNotPatched(node, declared);
    if (reason) nearMisses.push({ node: labelOf(node), graphPath, reason });
    return undefined;
  }
  const [tableInput, indicesInput] = kind === 'EmbedLayerNormalization' ? [node.input(2), node.input(0)] : [node.input(0), node.input(1)];
  if (!tableInput || !indicesInput) return undefined;
  const table = resolveTable(tableInput, node, declared);
  if (!table) return undefined; // data computed at run time (a Shape, an activation): not a table
  const nodeLabel = labelOf(node);
  // Near misses are reported for float (or untyped) tables only: Gathers on integer constants are shape arithmetic.
  const nearMiss = (reason: string) => {
    const type = lookupOutputType(node, kind, tableInput, table);
    if (type === undefined || isFloatingType(type)) nearMisses.push({ node: nodeLabel, graphPath, reason });
  };
  if (kind === 'Gather') {
    const axis = node.attributeValue<number>('axis', 0);
    const rowAxis = table.rank === undefined || axis >= 0 ? axis : axis + table.rank;
    if (rowAxis !== 0) {
      if (table.rank === 2) nearMiss(`Gather on axis ${axis} of 2-D table "${table.info.name}": a lookup gathers rows (axis 0)`);
      else if (table.rank !== 0) nearMiss(`Gather on axis ${axis} of table "${table.info.name}" of rank ${table.rank ?? 'unknown'}: a lookup gathers rows (axis 0) of a 2-D table`);
      return undefined;
    }
  }
  if (kind === 'Gather' || kind === 'ATen.embedding' || kind === 'ATenOp.embedding' || kind === 'EmbedLayerNormalization') {
    if (table.rank !== 2) {
      if (table.rank === undefined) nearMiss(`table "${table.info.name}" has no declared shape: an embedding table is 2-D (declare its shape)`);
      else if (table.rank !== 0) nearMiss(`table "${table.info.name}" has rank ${table.rank} (dims [${table.dims.join(', ')}]): an embedding table is 2-D`);
      return undefined;
    }
  }
  const problems = tableProblems(table);
  if (kind === 'GatherBlockQuantized') adjustQuantizedDims(node, table);
  const indices = context.tracer.describe(indicesInput);
  const indexType = indicesType(indicesInput);
  if (indexType !== undefined && indexType !== DataType.INT64 && indexType !== DataType.INT32) {
    problems.push(`indices "${indicesInput.name}" are ${dataTypeName(indexType)}: a lookup takes int32 or int64 token ids`);
  }
  const patchableKind = kind !== 'EmbedLayerNormalization';
  const output = node.outputs[0];
  if (patchableKind && !output) problems.push(`${node.describe()} has no output`);
  else if (patchableKind && output!.name === '') problems.push(`${node.describe()} has an empty output name (an absent output)`);
  const outputType = lookupOutputType(node, kind, tableInput, table);
  const reasons: string[] = [];
  const role = assignRole(table.info, indices, reasons);
  const invalidReason = problems.length ? problems.join('; ') : undefined;
  const opsetTooOld = patchableKind && !invalidReason && context.opset !== undefined && context.opset < NOISE_MIN_OPSET;
  const patchable = patchableKind && !invalidReason && !opsetTooOld;
  const scale = patchableKind && !invalidReason ? findScaleMul(output!, declared) : undefined;
  if (scale?.invalidReason) reasons.push(`scale Mul ${scale.node.describe()}: ${scale.invalidReason}`);
  return {
    node,
    nodeLabel,
    graphPath,
    kind,
    table: table.info,
    indices,
    outputType,
    role,
    reasons,
    patchable,
    notPatchableReason: patchable ? undefined
      : invalidReason ? `the model is malformed here: ${invalidReason} (ONNX Runtime cannot run it either; fix or re-export the model)`
      : opsetTooOld ? opsetTooOldReason(context.opset!)
      : FUSED_REASON,
    invalidReason,
    scale,
  };
}

const FUSED_REASON = 'the lookup is fused into com.microsoft EmbedLayerNormalization, which adds word, position and segment embeddings and normalizes them in one kernel: '
  + 'no separate token-embedding output exists to add noise to. Export the model without that fusion, then patch: the plain export (torch.onnx / optimum-cli export onnx without -O2 and up), '
  + 'optimum\'s ORTOptimizer with OptimizationConfig(disable_embed_layer_norm_fusion=True), or python -m onnxruntime.transformers.optimizer --disable_embed_layer_norm';

function opsetTooOldReason(opset: number): string {
  return `the model imports default-domain opset ${opset} < ${NOISE_MIN_OPSET}: the noise ops need opset >= ${NOISE_MIN_OPSET} (ONNX Runtime runs opset 7 and newer only) and NEFTune never changes a model's opset; `
    + 'convert the model first (onnx.version_converter.convert_version(model, 13)), then patch';
}

function labelOf(node: Node): string {
  return node.name ?? `${node.opType} writing ${node.outputs[0]?.name || '?'}`;
}

/**
 * Why a node that computes an embedding in a form the patch does not take is not a candidate
 * (ATen embedding_bag, a one-hot MatMul), or undefined for any other node.
 */
function lookupFormNotPatched(node: Node, declared: DeclarationLookup): string | undefined {
  const aten = atenOperator(node);
  if (aten === 'embedding_bag' || aten === '_embedding_bag') {
    const weight = node.input(0);
    return `${node.opType} ${aten}${weight ? ` on table "${weight.name}"` : ''} sums or averages bags of rows in one kernel: no per-token embedding output exists to add noise to. `
      + 'Export the model with per-token lookups (nn.Embedding, then the bag reduction), then patch';
  }
  if (node.opType !== 'MatMul' || !isDefaultDomain(node.domain)) return undefined;
  let oneHot = node.input(0)?.producer;
  if (oneHot?.opType === 'Cast' && isDefaultDomain(oneHot.domain)) oneHot = oneHot.input(0)?.producer;
  if (oneHot?.opType !== 'OneHot' || !isDefaultDomain(oneHot.domain)) return undefined;
  const tableInput = node.input(1);
  const table = tableInput ? resolveTable(tableInput, node, declared) : undefined;
  if (!table) return undefined;
  return `MatMul of OneHot(${oneHot.input(0)?.name ?? '?'}) with table "${table.info.name}" is an embedding lookup written as a product; NEFTune patches lookups (Gather, ATen embedding). `
    + 'Export the embedding as a lookup (nn.Embedding / tf.gather instead of one_hot @ weights), then patch';
}

interface ResolvedTable {
  info: TableInfo;
  rank: number | undefined;
  /** Dims as stored or declared (symbolic graph-input dims as their names). */
  dims: Dim[];
  /** The stored tensor, when the table has one (initializer or Constant). */
  tensor: Tensor | undefined;
}

function resolveTable(input: Value, lookup: Node, declared: DeclarationLookup): ResolvedTable | undefined {
  const via: string[] = [];
  let v = input;
  for (;;) {
    const p = v.producer;
    if (p && PASS_THROUGH_TABLE.has(p.opType) && isDefaultDomain(p.domain) && p.input(0)) {
      via.push(p.opType);
      v = p.input(0)!;
      continue;
    }
    break;
  }
  let storage: TableStorage = 'unknown';
  let dims: Dim[] | undefined;
  let dataType: DataType | undefined;
  let tensor: Tensor | undefined;
  const isInput = declared.isInput(v);
  if (v.initializer) {
    storage = isInput ? 'initializer+graph-input' : 'initializer';
    tensor = v.initializer;
  } else if (isInput) {
    storage = 'graph-input';
    dims = v.shape;
    dataType = v.elemType;
  } else if (v.producer?.opType === 'Constant') {
    const t = v.producer.attributeValue<Tensor | undefined>('value', undefined);
    if (!(t instanceof Tensor)) return undefined;
    storage = 'constant-node';
    tensor = t;
  } else {
    return undefined;
  }
  if (tensor) {
    dims = tensor.dims;
    dataType = tensor.dataType;
  }
  const known = (n: Dim) => (typeof n === 'number' && Number.isSafeInteger(n) && n >= 0 ? n : undefined);
  return {
    rank: dims?.length,
    dims: dims ?? [],
    tensor,
    info: {
      name: v.name, value: v, storage,
      outerScope: v.graph !== null && v.graph !== lookup.graph,
      via, rows: known(dims?.[0]), dim: known(dims?.[1]), dataType,
    },
  };
}

/**
 * What is wrong with a table as stored: dims that are negative or too large to address, or a
 * payload whose size does not match dims x element size. Only lengths are compared: payloads
 * that stay in the file (deferred or external) are never read for this.
 */
function tableProblems(table: ResolvedTable): string[] {
  const what = `table "${table.info.name}"`;
  if (table.tensor) {
    const sized = tensorSizeProblem(table.tensor, what);
    return sized ? [sized] : [];
  }
  // A graph-input table has only declared dims (names for symbolic ones).
  const bad = table.dims.some((d) => typeof d === 'number' && (!Number.isSafeInteger(d) || d < 0));
  return bad ? [`${what} is declared with dims [${table.dims.map((d) => d ?? '?').join(', ')}]: a dimension is negative or beyond 2^53`] : [];
}

/** Why `t`'s payload does not fit its dims and element type, or undefined when it does (or cannot be told). */
function tensorSizeProblem(t: Tensor, what: string): string | undefined {
  const dims = t.dims;
  if (dims.some((d) => d < 0)) return `${what} has dims [${dims.join(', ')}]: a dimension is negative`;
  if (dims.some((d) => !Number.isSafeInteger(d))) return `${what} has dims [${dims.join(', ')}]: a dimension is beyond 2^53`;
  const bits = dataTypeBits(t.dataType);
  if (!bits) return undefined; // strings, unknown types: no fixed size
  const needed = t.byteLength;
  const type = `${dataTypeName(t.dataType)} [${dims.join(', ')}]`;
  if (!Number.isSafeInteger(needed)) return `${what} is ${type}: ${needed} bytes is beyond any file`;
  let held: { bytes: number; where: string } | undefined;
  try {
    held = payloadLength(t);
  } catch (error) {
    if (error instanceof OnnxNeftuneError) return `${what}: ${error.message}`;
    throw error;
  }
  if (!held || held.bytes === needed) return undefined;
  return `${what} is ${type}, which needs ${needed} bytes, but ${held.where} holds ${held.bytes}`;
}

/** The payload's size in bytes as stored, without reading deferred or external bytes; undefined when not recorded. */
function payloadLength(t: Tensor): { bytes: number; where: string } | undefined {
  const p = t.proto;
  switch (t.storage) {
    case 'raw': return { bytes: deferredPayloadOf(p.raw_data)?.length ?? p.raw_data!.length, where: 'raw_data' };
    case 'empty': return { bytes: 0, where: 'the tensor (no data field)' };
    case 'external': {
      const length = t.external!.length;
      return length === undefined ? undefined : { bytes: length, where: `external data "${t.external!.location}" (length)` };
    }
    case 'typed': {
      // Same field order and widths as Tensor.rawBytes() converts them.
      const bits = dataTypeBits(t.dataType);
      if (p.float_data?.length) return { bytes: p.float_data.length * 4, where: 'float_data' };
      if (p.double_data?.length) return { bytes: p.double_data.length * 8, where: 'double_data' };
      if (p.int64_data?.length) return { bytes: p.int64_data.length * 8, where: 'int64_data' };
      if (p.uint64_data?.length) return { bytes: p.uint64_data.length * (t.dataType === DataType.UINT32 ? 4 : 8), where: 'uint64_data' };
      if (p.int32_data?.length) return { bytes: p.int32_data.length * (bits >= 8 ? bits / 8 : 1), where: 'int32_data' };
      return undefined;
    }
  }
}

/** GatherBlockQuantized packs several sub-byte values per element along the quantized axis. */
function adjustQuantizedDims(node: Node, table: ResolvedTable): void {
  const bits = node.attributeValue<number>('bits', 4);
  const dt = table.info.dataType;
  if (table.info.dim !== undefined && (dt === DataType.UINT8 || dt === DataType.INT8) && bits < 8) {
    table.info.dim = table.info.dim * (8 / bits);
  }
}

/** What a value the indices are computed from was traced to. */
interface Trace {
  /** The first token-id graph input reached (not named like a mask, position or segment ids). */
  ids: Value | undefined;
  /** The first other graph input reached (a mask, position or segment ids input). */
  named: Value | undefined;
  /** A Range or CumSum reached: the indices are computed positions. */
  position: Node | undefined;
  /** Every leaf is a constant (initializer or Constant). */
  constant: boolean;
  /** The node that computes the value, when it is one of the ops traced through. */
  node: Node | undefined;
  /** The value with reshapes and casts skipped: what a derivation shows. */
  shown: Value;
  /** An element-wise op was passed (a derivation is worth showing). */
  arithmetic: boolean;
  /** Ops towards the chosen source, as a shared linked list (the whole path is never copied per value). */
  via: ViaLink | undefined;
}
/** `end` is the path's last op (the source's), kept so a long path is listed without walking it. */
interface ViaLink { op: string; rest: ViaLink | undefined; end: string }

/**
 * Traces lookup indices back through integer element-wise and shape-only ops to graph inputs,
 * constants and position computations. Each value is traced once for the whole model (memoised),
 * with an explicit stack: the work is linear in the graph, whatever its depth or lookup count.
 */
class IndexTracer {
  private readonly memo = new Map<Value, Trace>();
  constructor(private readonly declared: DeclarationLookup) {}

  describe(input: Value): IndicesInfo {
    const t = this.trace(input);
    const via: string[] = [];
    for (let link = t.via; link; link = link.rest) {
      if (via.length === VIA_LISTED) { via.push('…', link.end); break; }
      via.push(link.op);
    }
    const derivation = t.arithmetic ? this.render(t, { ops: DERIVATION_OPS }) : undefined;
    if (t.position) return { source: 'position-computation', input: undefined, via, derivation };
    const source = t.ids ?? t.named;
    if (source) return { source: 'graph-input', input: source.name, via, derivation };
    return { source: t.constant ? 'constant' : 'other', input: undefined, via, derivation };
  }

  private trace(root: Value): Trace {
    const done = this.memo.get(root);
    if (done) return done;
    const stack: Value[] = [root];
    const expanded = new Set<Value>();
    while (stack.length) {
      const v = stack[stack.length - 1]!;
      if (this.memo.has(v)) { stack.pop(); continue; }
      const node = this.tracedNode(v);
      if (node && !expanded.has(v)) {
        // Operands first; a value met again while its operands are pending is a cycle (malformed) and reads as computed.
        expanded.add(v);
        let pending = false;
        for (const o of dataInputs(node)) if (!this.memo.has(o) && !expanded.has(o)) { stack.push(o); pending = true; }
        if (pending) continue;
      }
      stack.pop();
      this.memo.set(v, node ? this.combine(v, node) : this.leaf(v));
    }
    return this.memo.get(root)!;
  }

  /** The producer of `v` when it is an op traced through. */
  private tracedNode(v: Value): Node | undefined {
    const p = v.producer;
    if (!p || !isDefaultDomain(p.domain) || v.initializer || this.declared.isInput(v)) return undefined;
    return SHAPE_ONLY_INDICES.has(p.opType) || INFIX_INDICES.has(p.opType) || FUNCTION_INDICES.has(p.opType) ? p : undefined;
  }

  private leaf(v: Value): Trace {
    const t = computedLeaf(v);
    const p = v.producer;
    if (v.initializer || p?.opType === 'Constant') t.constant = true;
    else if (this.declared.isInput(v)) {
      if (MASK_NAME.test(v.name) || POSITION_NAME.test(v.name) || TOKEN_TYPE_NAME.test(v.name)) t.named = v; else t.ids = v;
    } else if (p && POSITION_OPS.has(p.opType)) {
      t.position = p;
      t.via = { op: p.opType, rest: undefined, end: p.opType };
    }
    return t;
  }

  private combine(v: Value, node: Node): Trace {
    const operands: Trace[] = [];
    for (const o of dataInputs(node)) {
      // An operand still pending is on a cycle: it counts as a computed value.
      operands.push(this.memo.get(o) ?? computedLeaf(o));
    }
    const first = <K extends 'ids' | 'named' | 'position'>(k: K) => operands.find((o) => o[k] !== undefined);
    const chosen = first('position') ?? first('ids') ?? first('named') ?? operands[0];
    const shapeOnly = SHAPE_ONLY_INDICES.has(node.opType);
    return {
      ids: first('ids')?.ids, named: first('named')?.named, position: first('position')?.position,
      constant: operands.length > 0 && operands.every((o) => o.constant),
      node, shown: shapeOnly && operands[0] ? operands[0].shown : v,
      arithmetic: !shapeOnly || operands.some((o) => o.arithmetic),
      via: { op: node.opType, rest: chosen?.via, end: chosen?.via?.end ?? node.opType },
    };
  }

  /** A readable expression; at most `budget.ops` operators, the rest `…`. Bounded work: the recursion stops with the budget. */
  private render(t: Trace, budget: { ops: number }): string {
    const v = t.shown;
    const shown = this.memo.get(v) ?? t;
    const node = shown.node;
    if (!node || SHAPE_ONLY_INDICES.has(node.opType)) return leafText(v, shown);
    if (budget.ops <= 0) return '…';
    budget.ops--;
    const operand = (o: Value | null | undefined): string => {
      if (!o) return '?';
      const ot = this.memo.get(o);
      if (!ot) return o.name;
      const text = this.render(ot, budget);
      const inner = this.memo.get(ot.shown)?.node;
      return inner && INFIX_INDICES.has(inner.opType) && text !== '…' ? `(${text})` : text;
    };
    const symbol = INFIX_INDICES.get(node.opType);
    if (symbol) return node.inputs.slice(0, 2).map(operand).join(` ${symbol} `);
    if (node.opType === 'Where') return `where(${node.input(0)?.name ?? '?'}, ${operand(node.input(1))}, ${operand(node.input(2))})`;
    if (node.opType === 'Clip') return `clip(${operand(node.input(0))})`;
    const shownInputs = node.inputs.slice(0, 3).map(operand);
    if (node.inputs.length > 3) shownInputs.push('…');
    return `${node.opType.toLowerCase()}(${shownInputs.join(', ')})`;
  }
}

function computedLeaf(v: Value): Trace {
  return { ids: undefined, named: undefined, position: undefined, constant: false, node: undefined, shown: v, arithmetic: false, via: undefined };
}

/** The inputs of a traced op that carry index values (not shapes, axes, bounds or a Where condition). */
function dataInputs(node: Node): Value[] {
  const pick = SHAPE_ONLY_INDICES.has(node.opType) || node.opType === 'Clip' ? node.inputs.slice(0, 1)
    : node.opType === 'Where' ? node.inputs.slice(1, 3) : node.inputs;
  return pick.filter((x): x is Value => !!x);
}

/** A leaf of a derivation: a graph input's name, a small constant's value, or the computing op. */
function leafText(v: Value, t: Trace): string {
  if (t.constant) {
    const c = constantTensor(v);
    try {
      if (c && c.elementCount === 1 && c.storage !== 'external' && isIntegerOrFloat(c.dataType) && !tensorSizeProblem(c, 'constant')) return String(c.toArray()[0]);
    } catch { /* unreadable payload: show the name */ }
    return v.name;
  }
  if (t.position) return `${t.position.opType}(${t.position.input(0)?.name ?? '?'})`;
  return v.name;
}

function isIntegerOrFloat(t: DataType): boolean {
  return t === DataType.INT64 || t === DataType.INT32 || t === DataType.INT16 || t === DataType.INT8 || t === DataType.UINT8 || isFloatingType(t);
}

/** The indices' element type: declared on the value, or on what it is a reshaped copy of, or a Cast's target. */
function indicesType(input: Value): DataType | undefined {
  let v = input;
  for (let steps = 0; steps < 32; steps++) {
    if (v.elemType) return v.elemType;
    if (v.initializer) return v.initializer.dataType || undefined;
    const p = v.producer;
    if (!p || !isDefaultDomain(p.domain)) return undefined;
    if (p.opType === 'Cast') return p.attributeValue<number | undefined>('to', undefined) || undefined;
    if (p.opType === 'Constant') return constantTensor(v)?.dataType || undefined;
    if (!TYPE_PRESERVING_INDICES.has(p.opType) || !p.input(0)) return undefined;
    v = p.input(0)!;
  }
  return undefined;
}

function assignRole(table: TableInfo, indices: IndicesInfo, reasons: string[]): EmbeddingRole {
  const size = `${table.rows ?? '?'} x ${table.dim ?? '?'}`;
  const computed = indices.derivation ? `: ${indices.derivation}` : '';
  if (ROTARY_NAME.test(table.name)) {
    reasons.push(`table "${table.name}" is named like a rotary cos/sin cache`);
    return 'other';
  }
  if (indices.source === 'position-computation') {
    reasons.push(`indices are computed by ${indices.via.at(-1)} (a position computation)${computed}`);
    return 'position';
  }
  if (indices.source === 'graph-input') {
    const name = indices.input!;
    const from = indices.derivation ? `indices are computed from graph input "${name}"${computed}` : `indices come from graph input "${name}"`;
    if (TOKEN_TYPE_NAME.test(name)) { reasons.push(`${from} (segment / token-type ids)`); return 'token_type'; }
    if (POSITION_NAME.test(name)) { reasons.push(`${from} (position ids)`); return 'position'; }
    if (TOKEN_TYPE_NAME.test(table.name)) { reasons.push(`table "${table.name}" is named like a token-type table`); return 'token_type'; }
    if (POSITION_NAME.test(table.name)) { reasons.push(`table "${table.name}" is named like a position table`); return 'position'; }
    reasons.push(indices.derivation ? from : `${from}${indices.via.length ? ` through ${indices.via.join(' <- ')}` : ''}`, `table ${size}`);
    return 'token';
  }
  if (indices.source === 'constant' && (indices.via.some((op) => op === 'Slice' || op === 'Expand') || POSITION_NAME.test(table.name))) {
    reasons.push(`indices are a constant position buffer${indices.via.length ? ` sliced/expanded by ${indices.via.join(' <- ')}` : ''}`);
    return 'position';
  }
  if (POSITION_NAME.test(table.name)) { reasons.push(`table "${table.name}" is named like a position table`); return 'position'; }
  if (TOKEN_TYPE_NAME.test(table.name)) { reasons.push(`table "${table.name}" is named like a token-type table`); return 'token_type'; }
  reasons.push(`indices come from ${indices.source === 'constant' ? 'a constant' : 'a computed value'}, not a token-id input${computed ? ` (${indices.derivation})` : ''}`);
  return 'other';
}

function lookupOutputType(node: Node, kind: LookupKind, tableInput: Value, table: ResolvedTable): DataType | undefined {
  const declared = node.outputs[0]?.elemType;
  if (declared) return declared;
  if (kind === 'GatherBlockQuantized') return node.input(2)?.initializer?.dataType ?? node.input(2)?.elemType;
  let v: Value | null = tableInput;
  while (v?.producer && PASS_THROUGH_TABLE.has(v.producer.opType)) {
    const p: Node = v.producer;
    if (p.opType === 'Cast') return p.attributeValue<number>('to');
    if (p.opType === 'DequantizeLinear') {
      const scale = p.input(1);
      return scale?.initializer?.dataType ?? scale?.elemType;
    }
    v = p.input(0);
  }
  return table.info.dataType;
}

/** A Mul by a one-element constant that is the lookup's only reader (possibly behind one Cast). */
function findScaleMul(output: Value, declared: DeclarationLookup): EmbeddingCandidate['scale'] {
  const soleReader = (v: Value) => (v.useCount === 1 && !declared.isOutput(v) ? v.uses[0]!.node : undefined);
  let fed = output;
  let reader = soleReader(output);
  if (reader?.opType === 'Cast' && reader.outputs[0]) {
    fed = reader.outputs[0];
    reader = soleReader(fed);
  }
  if (!reader || reader.opType !== 'Mul' || !isDefaultDomain(reader.domain)) return undefined;
  const other = reader.inputs.find((v) => v && v !== fed);
  const constant = other ? constantTensor(other) : undefined;
  if (!constant || constant.dims.some((d) => d < 0) || constant.elementCount > 1) return undefined;
  // The factor is read only from a payload of exactly the right size (a short or long one would misread or throw).
  const invalidReason = tensorSizeProblem(constant, `scale constant "${other!.name}"`);
  if (invalidReason) return { node: reader, factor: undefined, invalidReason };
  const isPlainNumber = constant.dataType === DataType.FLOAT || constant.dataType === DataType.DOUBLE;
  return { node: reader, factor: isPlainNumber && constant.storage !== 'external' && constant.elementCount === 1 ? Number(constant.toArray()[0]) : undefined };
}

function constantTensor(v: Value): Tensor | undefined {
  if (v.initializer) return v.initializer;
  if (v.producer?.opType === 'Constant') {
    const t = v.producer.attributeValue<unknown>('value');
    return t instanceof Tensor ? t : undefined;
  }
  return undefined;
}

function chooseDefaultTarget(candidates: EmbeddingCandidate[]): Omit<EmbeddingReport, 'candidates' | 'nearMisses'> {
  // Grouped in one pass: per-candidate scans of the list are quadratic in the number of lookups.
  const byTable = new Map<Value, EmbeddingCandidate[]>();
  const invalidTokens: EmbeddingCandidate[] = [];
  const notPatchable: EmbeddingCandidate[] = [];
  for (const c of candidates) {
    if (!c.patchable) notPatchable.push(c);
    if (c.role !== 'token') continue;
    if (c.invalidReason) { invalidTokens.push(c); continue; }
    if (!c.patchable) continue;
    const group = byTable.get(c.table.value);
    if (group) group.push(c); else byTable.set(c.table.value, [c]);
  }
  const describeInvalid = (list: EmbeddingCandidate[]) => listSome(list.map((c) => `${c.nodeLabel}: ${c.invalidReason}`), '; ');
  if (!byTable.size) {
    return {
      defaultTarget: [], ambiguous: false,
      targetReason: invalidTokens.length
        ? `no valid token embedding: ${describeInvalid(invalidTokens)}`
        : notPatchable.length
          ? `no patchable token embedding: ${listSome(notPatchable.map((c) => `${c.nodeLabel}: ${c.notPatchableReason}`), '; ')}`
          : candidates.length ? 'no lookup is indexed from a token-id graph input' : 'no embedding lookup found',
    };
  }
  // Loops, not Math.max(...list): spreading 100k+ arguments overflows the stack.
  const rows = (v: Value) => byTable.get(v)![0]!.table.rows ?? -1;
  let largest = -Infinity;
  for (const v of byTable.keys()) largest = Math.max(largest, rows(v));
  const top: Value[] = [];
  for (const v of byTable.keys()) if (rows(v) === largest) top.push(v);
  const skipped = invalidTokens.length ? `; skipped invalid token lookup${invalidTokens.length > 1 ? 's' : ''}: ${describeInvalid(invalidTokens)}` : '';
  const names = (list: Value[]) => listSome(list.map((v) => `"${v.name}"`));
  if (top.length === 1) {
    const chosen = byTable.get(top[0]!)!;
    return {
      defaultTarget: chosen, ambiguous: false,
      targetReason: `token table "${top[0]!.name}" (${largest} rows${byTable.size > 1 ? ', the largest vocabulary among token lookups' : ''}), read by ${chosen.length} lookup${chosen.length > 1 ? 's' : ''}${skipped}`,
    };
  }
  const copies = areSubgraphCopies(top.map((v) => byTable.get(v)!));
  if (copies) {
    const chosen: EmbeddingCandidate[] = [];
    for (const v of top) for (const c of byTable.get(v)!) chosen.push(c);
    return {
      defaultTarget: chosen, ambiguous: false,
      targetReason: `token tables ${names(top)} are same-shaped copies in the subgraphs of ${copies}: treated as one shared table, read by ${chosen.length} lookups${skipped}`,
    };
  }
  return {
    defaultTarget: [], ambiguous: true,
    targetReason: `${top.length} token tables tie at ${largest} rows: ${names(top)}${skipped}`,
  };
}

/** Same-shaped, same-typed tables each living in a different subgraph of one node (T5 encoder/decoder in BeamSearch). */
function areSubgraphCopies(groups: EmbeddingCandidate[][]): string | undefined {
  const first = groups[0]![0]!.table;
  const owners = new Set<Node>();
  const graphs = new Set<Graph>();
  for (const group of groups) {
    const t = group[0]!.table;
    if (t.dim !== first.dim || t.dataType !== first.dataType || t.outerScope) return undefined;
    const home = t.value.graph;
    if (!home?.owner || graphs.has(home)) return undefined;
    graphs.add(home);
    owners.add(home.owner);
  }
  if (owners.size !== 1) return undefined;
  return [...owners][0]!.describe();
}

/** One line per candidate, for error messages and reports. */
export function describeCandidate(c: EmbeddingCandidate): string {
  const where = c.graphPath.length > 1 ? ` in ${c.graphPath.slice(1).join(' / ')}` : '';
  const size = `${c.table.rows ?? '?'}x${c.table.dim ?? '?'} ${c.table.dataType !== undefined ? dataTypeName(c.table.dataType) : '?'}`;
  return `${c.kind} "${c.nodeLabel}"${where}: table "${c.table.name}" [${size}, ${c.table.storage}${c.table.outerScope ? ', outer scope' : ''}], role ${c.role}${c.patchable ? '' : c.invalidReason ? ` (invalid: ${c.invalidReason})` : c.kind === 'EmbedLayerNormalization' ? ' (fused, not patchable)' : ` (not patchable: ${c.notPatchableReason})`}`;
}
