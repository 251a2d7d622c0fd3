/**
 * Finds embedding lookups and says what each one is. An analysis on its own: nothing changes.
 * A candidate is a lookup into a 2-D table (Gather on axis 0, com.microsoft GatherBlockQuantized,
 * ATen `embedding`) or a fused EmbedLayerNormalization (reported, never patchable).
 */
import { DataType, dataTypeName } from '../graph/dtype.js';
import { Tensor } from '../graph/tensor.js';
import type { Graph, Model, Node, Value } from '../graph/ir.js';

export type LookupKind = 'Gather' | 'GatherBlockQuantized' | 'ATen.embedding' | 'EmbedLayerNormalization';
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

export interface EmbeddingCandidate {
  node: Node;
  /** Node name, or a generated description when the node has none. */
  nodeLabel: string;
  /** Where the node sits: ['main'] or e.g. ['main', 'BeamSearch "bs".decoder']. */
  graphPath: string[];
  kind: LookupKind;
  table: TableInfo;
  indices: { source: IndicesSource; input: string | undefined; via: string[] };
  /** Element type of the lookup's output (what noise is added in). */
  outputType: DataType | undefined;
  role: EmbeddingRole;
  reasons: string[];
  patchable: boolean;
  notPatchableReason: string | undefined;
  /** A scalar scale Mul right after the lookup (Gemma's sqrt(d)), possibly behind one Cast. */
  scale: { node: Node; factor: number | undefined } | undefined;
}

export interface EmbeddingReport {
  candidates: EmbeddingCandidate[];
  /** Candidates of the default target (token table), empty when there is none or it is ambiguous. */
  defaultTarget: EmbeddingCandidate[];
  /** Why the default target was chosen, or why none could be. */
  targetReason: string;
  ambiguous: boolean;
}

const PASS_THROUGH_TABLE = new Set(['Identity', 'Cast', 'DequantizeLinear']);
const SHAPE_PRESERVING_INDICES = new Set(['Identity', 'Cast', 'Reshape', 'Unsqueeze', 'Squeeze', 'Flatten', 'Slice', 'Expand', 'Clip']);
const POSITION_OPS = new Set(['Range', 'CumSum']);
const ROTARY_NAME = /rotary|cos_cache|sin_cache|cos_cached|sin_cached|inv_freq|\bcos\b|\bsin\b/i;
const POSITION_NAME = /position|(^|[._/])pos([._/]|_?emb|_?ids|$)|wpe/i;
const TOKEN_TYPE_NAME = /token_type|segment|seg_(ids|emb)|type_ids/i;

export function findEmbeddings(model: Model): EmbeddingReport {
  const candidates: EmbeddingCandidate[] = [];
  for (const { graph, path } of graphsWithPaths(model)) {
    for (const node of graph) {
      const candidate = inspectNode(node, path);
      if (candidate) candidates.push(candidate);
    }
  }
  const choice = chooseDefaultTarget(candidates);
  return { candidates, ...choice };
}

/** Every graph of the model with its path as reported in candidates and patch records. */
export function* graphsWithPaths(model: Model): Iterable<{ graph: Graph; path: string[] }> {
  function* walk(graph: Graph, path: string[]): Iterable<{ graph: Graph; path: string[] }> {
    yield { graph, path };
    for (const node of graph) {
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

function lookupKind(node: Node): LookupKind | undefined {
  if (node.opType === 'Gather' && isDefaultDomain(node.domain)) return 'Gather';
  if (node.opType === 'GatherBlockQuantized' && node.domain === 'com.microsoft') return 'GatherBlockQuantized';
  if (node.opType === 'ATen' && node.attributeValue<string>('operator', '') === 'embedding') return 'ATen.embedding';
  if (node.opType === 'EmbedLayerNormalization' && node.domain === 'com.microsoft') return 'EmbedLayerNormalization';
  return undefined;
}

const isDefaultDomain = (d: string) => d === '' || d === 'ai.onnx';

function inspectNode(node: Node, graphPath: string[]): EmbeddingCandidate | undefined {
  const kind = lookupKind(node);
  if (!kind) return undefined;
  const [tableInput, indicesInput] = kind === 'EmbedLayerNormalization' ? [node.input(2), node.input(0)]
    : kind === 'ATen.embedding' ? [node.input(0), node.input(1)] : [node.input(0), node.input(1)];
  if (!tableInput || !indicesInput) return undefined;
  if (kind === 'Gather' && node.attributeValue<number>('axis', 0) !== 0) return undefined;
  const table = resolveTable(tableInput, node);
  if (!table) return undefined; // data computed at run time (a Shape, an activation): not a table
  if (kind === 'Gather' || kind === 'ATen.embedding' || kind === 'EmbedLayerNormalization') {
    if (table.rank !== 2) return undefined;
  }
  if (kind === 'GatherBlockQuantized') adjustQuantizedDims(node, table);
  const indices = traceIndices(indicesInput);
  const outputType = lookupOutputType(node, kind, tableInput, table);
  const reasons: string[] = [];
  const role = assignRole(table.info, indices, reasons);
  const patchable = kind !== 'EmbedLayerNormalization';
  return {
    node,
    nodeLabel: node.name ?? `${node.opType} writing ${node.outputs[0]?.name ?? '?'}`,
    graphPath,
    kind,
    table: table.info,
    indices,
    outputType,
    role,
    reasons,
    patchable,
    notPatchableReason: patchable ? undefined
      : 'the lookup is fused into com.microsoft EmbedLayerNormalization, which adds word, position and segment embeddings and normalizes them in one kernel: no separate token-embedding output exists to add noise to (export the model without the EmbedLayerNormalization fusion to patch it)',
    scale: patchable ? findScaleMul(node.outputs[0] ?? null) : undefined,
  };
}

interface ResolvedTable { info: TableInfo; rank: number | undefined }

function resolveTable(input: Value, lookup: Node): ResolvedTable | undefined {
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
  let dims: number[] | undefined;
  let dataType: DataType | undefined;
  if (v.initializer) {
    storage = v.isGraphInput ? 'initializer+graph-input' : 'initializer';
    dims = v.initializer.dims;
    dataType = v.initializer.dataType;
  } else if (v.isGraphInput) {
    storage = 'graph-input';
    const shape = v.shape;
    dims = shape?.map((d) => (typeof d === 'number' ? d : -1));
    dataType = v.elemType;
  } else if (v.producer?.opType === 'Constant') {
    const t = v.producer.attributeValue<Tensor | undefined>('value', undefined);
    if (!(t instanceof Tensor)) return undefined;
    storage = 'constant-node';
    dims = t.dims;
    dataType = t.dataType;
  } else {
    return undefined;
  }
  const known = (n: number | undefined) => (n === undefined || n < 0 ? undefined : n);
  return {
    rank: dims?.length,
    info: {
      name: v.name, value: v, storage,
      outerScope: v.graph !== null && v.graph !== lookup.graph,
      via, rows: known(dims?.[0]), dim: known(dims?.[1]), dataType,
    },
  };
}

/** GatherBlockQuantized packs several sub-byte values per element along the quantized axis. */
function adjustQuantizedDims(node: Node, table: ResolvedTable): void {
  const bits = node.attributeValue<number>('bits', 4);
  const dt = table.info.dataType;
  if (table.info.dim !== undefined && (dt === DataType.UINT8 || dt === DataType.INT8) && bits < 8) {
    table.info.dim = table.info.dim * (8 / bits);
  }
}

function traceIndices(input: Value): EmbeddingCandidate['indices'] {
  const via: string[] = [];
  let v: Value = input;
  let sawPosition = false;
  for (let steps = 0; steps < 32; steps++) {
    const p = v.producer;
    if (!p) break;
    if (POSITION_OPS.has(p.opType)) { via.push(p.opType); sawPosition = true; break; }
    if (!SHAPE_PRESERVING_INDICES.has(p.opType) || !p.input(0)) break;
    via.push(p.opType);
    v = p.input(0)!;
  }
  if (sawPosition) return { source: 'position-computation', input: undefined, via };
  if (v.isGraphInput && !v.initializer) return { source: 'graph-input', input: v.name, via };
  if (v.initializer || v.producer?.opType === 'Constant') return { source: 'constant', input: undefined, via };
  return { source: 'other', input: undefined, via };
}

function assignRole(table: TableInfo, indices: EmbeddingCandidate['indices'], reasons: string[]): EmbeddingRole {
  const size = `${table.rows ?? '?'} x ${table.dim ?? '?'}`;
  if (ROTARY_NAME.test(table.name)) {
    reasons.push(`table "${table.name}" is named like a rotary cos/sin cache`);
    return 'other';
  }
  if (indices.source === 'position-computation') {
    reasons.push(`indices are computed by ${indices.via.at(-1)} (a position computation)`);
    return 'position';
  }
  if (indices.source === 'graph-input') {
    const name = indices.input!;
    if (TOKEN_TYPE_NAME.test(name)) { reasons.push(`indices come from graph input "${name}" (segment / token-type ids)`); return 'token_type'; }
    if (POSITION_NAME.test(name)) { reasons.push(`indices come from graph input "${name}" (position ids)`); return 'position'; }
    if (TOKEN_TYPE_NAME.test(table.name)) { reasons.push(`table "${table.name}" is named like a token-type table`); return 'token_type'; }
    if (POSITION_NAME.test(table.name)) { reasons.push(`table "${table.name}" is named like a position table`); return 'position'; }
    reasons.push(`indices come from graph input "${name}"${indices.via.length ? ` through ${indices.via.join(' <- ')}` : ''}`, `table ${size}`);
    return 'token';
  }
  if (indices.source === 'constant' && (indices.via.some((op) => op === 'Slice' || op === 'Expand') || POSITION_NAME.test(table.name))) {
    reasons.push(`indices are a constant position buffer${indices.via.length ? ` sliced/expanded by ${indices.via.join(' <- ')}` : ''}`);
    return 'position';
  }
  if (POSITION_NAME.test(table.name)) { reasons.push(`table "${table.name}" is named like a position table`); return 'position'; }
  if (TOKEN_TYPE_NAME.test(table.name)) { reasons.push(`table "${table.name}" is named like a token-type table`); return 'token_type'; }
  reasons.push(`indices come from ${indices.source === 'constant' ? 'a constant' : 'a computed value'}, not a token-id input`);
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
function findScaleMul(output: Value | null): EmbeddingCandidate['scale'] {
  const soleReader = (v: Value) => (v.uses.length === 1 && !v.isGraphOutput ? v.uses[0]!.node : undefined);
  if (!output) return undefined;
  let fed = output;
  let reader = soleReader(output);
  if (reader?.opType === 'Cast' && reader.outputs[0]) {
    fed = reader.outputs[0];
    reader = soleReader(fed);
  }
  if (!reader || reader.opType !== 'Mul' || !isDefaultDomain(reader.domain)) return undefined;
  const other = reader.inputs.find((v) => v && v !== fed);
  const constant = other ? constantTensor(other) : undefined;
  if (!constant || constant.elementCount > 1) return undefined;
  const isPlainNumber = constant.dataType === DataType.FLOAT || constant.dataType === DataType.DOUBLE;
  return { node: reader, factor: isPlainNumber && constant.storage !== 'external' ? Number(constant.toArray()[0]) : undefined };
}

function constantTensor(v: Value): Tensor | undefined {
  if (v.initializer) return v.initializer;
  if (v.producer?.opType === 'Constant') {
    const t = v.producer.attributeValue<unknown>('value');
    return t instanceof Tensor ? t : undefined;
  }
  return undefined;
}

function chooseDefaultTarget(candidates: EmbeddingCandidate[]): Omit<EmbeddingReport, 'candidates'> {
  const tokens = candidates.filter((c) => c.role === 'token' && c.patchable);
  if (!tokens.length) {
    const fused = candidates.filter((c) => !c.patchable);
    return {
      defaultTarget: [], ambiguous: false,
      targetReason: fused.length
        ? `no patchable token embedding: ${fused.map((c) => `${c.nodeLabel}: ${c.notPatchableReason}`).join('; ')}`
        : candidates.length ? 'no lookup is indexed from a token-id graph input' : 'no embedding lookup found',
    };
  }
  const byTable = new Map<Value, EmbeddingCandidate[]>();
  for (const c of tokens) byTable.set(c.table.value, [...(byTable.get(c.table.value) ?? []), c]);
  const rows = (v: Value) => byTable.get(v)![0]!.table.rows ?? -1;
  const largest = Math.max(...[...byTable.keys()].map(rows));
  const top = [...byTable.keys()].filter((v) => rows(v) === largest);
  if (top.length === 1) {
    const chosen = byTable.get(top[0]!)!;
    return {
      defaultTarget: chosen, ambiguous: false,
      targetReason: `token table "${top[0]!.name}" (${largest} rows${byTable.size > 1 ? ', the largest vocabulary among token lookups' : ''}), read by ${chosen.length} lookup${chosen.length > 1 ? 's' : ''}`,
    };
  }
  const copies = areSubgraphCopies(top.map((v) => byTable.get(v)!));
  if (copies) {
    const chosen = top.flatMap((v) => byTable.get(v)!);
    return {
      defaultTarget: chosen, ambiguous: false,
      targetReason: `token tables ${top.map((v) => `"${v.name}"`).join(', ')} are same-shaped copies in the subgraphs of ${copies}: treated as one shared table, read by ${chosen.length} lookups`,
    };
  }
  return {
    defaultTarget: [], ambiguous: true,
    targetReason: `${top.length} token tables tie at ${largest} rows: ${top.map((v) => `"${v.name}"`).join(', ')}`,
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
  return `${c.kind} "${c.nodeLabel}"${where}: table "${c.table.name}" [${size}, ${c.table.storage}${c.table.outerScope ? ', outer scope' : ''}], role ${c.role}${c.patchable ? '' : ' (fused, not patchable)'}`;
}
