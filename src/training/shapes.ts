/**
 * Static shape and element-type inference for the ops the gradient rules know. Dims are numbers,
 * symbolic names carried from the model's declarations (`batch`, `sequence`), or undefined when
 * nothing can be said. Small integer tensors (shape arithmetic: Shape, Gather, Concat, Range, ...)
 * are tracked by content too, so a Reshape or Range driven by `Shape(x)` keeps x's symbolic dims.
 */
import { DataType, isFloatingType } from '../graph/dtype.js';
import type { Dim, Graph, Node, Value } from '../graph/ir.js';
import { Tensor } from '../graph/tensor.js';

export interface TensorInfo {
  readonly elem: DataType | undefined;
  /** undefined: rank unknown. */
  readonly dims: readonly Dim[] | undefined;
}

const UNKNOWN: TensorInfo = { elem: undefined, dims: undefined };
const MAX_TRACKED = 64;

export class ShapeTable {
  private readonly infos = new Map<Value, TensorInfo>();
  /** Known contents of small integer tensors (a scalar is a one-entry list). */
  private readonly contents = new Map<Value, Dim[]>();

  info(v: Value | null | undefined): TensorInfo { return (v && this.infos.get(v)) ?? (v ? declared(v) : UNKNOWN); }
  dims(v: Value | null | undefined): readonly Dim[] | undefined { return this.info(v).dims; }
  rank(v: Value | null | undefined): number | undefined { return this.info(v).dims?.length; }
  elem(v: Value | null | undefined): DataType | undefined { return this.info(v).elem; }
  isFloat(v: Value | null | undefined): boolean { const e = this.elem(v); return e !== undefined && isFloatingType(e); }
  /** Contents of a small integer tensor, where known (entries may still be symbolic or undefined). */
  ints(v: Value | null | undefined): Dim[] | undefined { return v ? this.contents.get(v) : undefined; }
  /** Contents only when every entry is a number. */
  numbers(v: Value | null | undefined): number[] | undefined {
    const c = this.ints(v);
    return c && c.every((x) => typeof x === 'number') ? (c as number[]) : undefined;
  }
  /** Static dims (all numbers) or undefined. */
  staticDims(v: Value | null | undefined): number[] | undefined {
    const d = this.dims(v);
    return d && d.every((x) => typeof x === 'number') ? (d as number[]) : undefined;
  }

  set(v: Value, info: TensorInfo): void { this.infos.set(v, info); }
  setInts(v: Value, c: Dim[]): void { if (c.length <= MAX_TRACKED) this.contents.set(v, c); }
}

function declared(v: Value): TensorInfo {
  const t = v.initializer;
  if (t) return { elem: t.dataType, dims: t.dims };
  return { elem: v.elemType || undefined, dims: v.shape };
}

function tensorContents(t: Tensor): Dim[] | undefined {
  if (t.dataType !== DataType.INT64 && t.dataType !== DataType.INT32) return undefined;
  if (t.elementCount > MAX_TRACKED || t.storage === 'external') return undefined;
  return Array.from(t.toArray() as ArrayLike<bigint | number>, (x) => Number(x));
}

export function attrInts(node: Node, name: string): number[] | undefined {
  const v = node.attributeValue<unknown>(name);
  return Array.isArray(v) ? v.map(Number) : undefined;
}
export function attrInt(node: Node, name: string, fallback: number): number {
  const v = node.attributeValue<unknown>(name);
  return typeof v === 'number' ? v : typeof v === 'bigint' ? Number(v) : fallback;
}
export function attrFloat(node: Node, name: string, fallback: number): number {
  const v = node.attributeValue<unknown>(name);
  return typeof v === 'number' ? v : fallback;
}

/** Broadcasts dims numpy-style; a pair of distinct symbols gives undefined. */
export function broadcastDims(shapes: ReadonlyArray<readonly Dim[] | undefined>): Dim[] | undefined {
  if (shapes.some((s) => s === undefined)) return undefined;
  const rank = Math.max(0, ...shapes.map((s) => s!.length));
  const out: Dim[] = [];
  for (let i = 0; i < rank; i++) {
    const dims = shapes.map((s) => s![s!.length - rank + i]).filter((d, _j) => d !== 1) as Dim[];
    const present = shapes.filter((s) => s!.length - rank + i >= 0).map((s) => s![s!.length - rank + i]);
    const numeric = present.find((d) => typeof d === 'number' && d !== 1);
    if (numeric !== undefined) { out.push(numeric); continue; }
    const rest = dims.filter((d) => d !== undefined || present.includes(undefined));
    if (present.every((d) => d === 1)) { out.push(1); continue; }
    const symbols = new Set(rest);
    out.push(symbols.size === 1 && !symbols.has(undefined) ? [...symbols][0] : undefined);
  }
  return out;
}

export const normalizeAxis = (axis: number, rank: number): number => (axis < 0 ? axis + rank : axis);

/** Axes given as an attribute (older opsets) or as input `index` (newer). */
export function axesOf(node: Node, shapes: ShapeTable, index: number, attrName = 'axes'): number[] | undefined {
  const fromAttr = attrInts(node, attrName);
  if (fromAttr) return fromAttr;
  const input = node.input(index);
  if (!input || input.name === '') return undefined;
  return shapes.numbers(input) ?? undefined;
}

/** Runs inference over a topologically ordered graph. */
export function inferShapes(graph: Graph, opset: number): ShapeTable {
  const shapes = new ShapeTable();
  for (const v of graph.initializers) {
    shapes.set(v, declared(v));
    const c = v.initializer && tensorContents(v.initializer);
    if (c) shapes.setInts(v, c);
  }
  for (const v of graph.inputs) if (!v.initializer) shapes.set(v, declared(v));
  for (const node of graph) inferNode(node, shapes, opset);
  return shapes;
}

export function inferNode(node: Node, shapes: ShapeTable, opset: number): void {
  const ins = node.inputs;
  const x = ins[0] ?? null;
  const out = (i: number, info: TensorInfo) => {
    const v = node.outputs[i];
    if (!v) return;
    // A declaration in the model wins where inference knows less.
    const d = declared(v);
    const dims = info.dims ?? d.dims;
    shapes.set(v, { elem: info.elem ?? d.elem, dims: dims && d.dims && d.dims.length === dims.length ? dims.map((x, k) => x ?? d.dims![k]) : dims });
  };
  const same = () => out(0, shapes.info(x));
  const xd = shapes.dims(x);
  const xe = shapes.elem(x);
  const y = node.outputs[0];
  switch (node.opType) {
    case 'Identity': case 'Neg': case 'Sqrt': case 'Reciprocal': case 'Exp': case 'Log': case 'Tanh':
    case 'Sigmoid': case 'Relu': case 'Erf': case 'Softmax': case 'LogSoftmax': case 'Abs': case 'Gelu': case 'RMSNormalization':
    case 'RandomUniformLike': case 'RandomNormalLike': case 'Floor': case 'Ceil': case 'Round': case 'Sign':
      same();
      if (node.opType === 'Identity' && shapes.ints(x) && y) shapes.setInts(y, shapes.ints(x)!);
      if (node.opType.startsWith('Random')) {
        const dtype = node.attributeValue<number | undefined>('dtype');
        if (dtype !== undefined) out(0, { elem: dtype, dims: xd });
      }
      return;
    case 'Dropout':
      same();
      out(1, { elem: DataType.BOOL, dims: xd });
      return;
    case 'Add': case 'Sub': case 'Mul': case 'Div': case 'Pow': case 'Max': case 'Min': case 'Mod': {
      const dims = broadcastDims(ins.map((v) => shapes.dims(v)));
      out(0, { elem: xe, dims });
      const a = shapes.ints(ins[0]), b = shapes.ints(ins[1]);
      if (y && a && b && (a.length === b.length || a.length === 1 || b.length === 1) && node.opType !== 'Pow') {
        const n = Math.max(a.length, b.length);
        shapes.setInts(y, Array.from({ length: n }, (_, i) => arith(node.opType, a[a.length === 1 ? 0 : i], b[b.length === 1 ? 0 : i])));
      }
      return;
    }
    case 'Equal': case 'Less': case 'Greater': case 'LessOrEqual': case 'GreaterOrEqual': case 'And': case 'Or': case 'Xor': case 'Not':
      out(0, { elem: DataType.BOOL, dims: broadcastDims(ins.map((v) => shapes.dims(v))) });
      return;
    case 'Where':
      out(0, { elem: shapes.elem(ins[1]), dims: broadcastDims(ins.map((v) => shapes.dims(v))) });
      return;
    case 'Cast': {
      const to = attrInt(node, 'to', 0);
      out(0, { elem: to, dims: xd });
      if (y && shapes.ints(x) && (to === DataType.INT64 || to === DataType.INT32)) shapes.setInts(y, shapes.ints(x)!);
      return;
    }
    case 'Shape': {
      const start = attrInt(node, 'start', 0), end = attrInt(node, 'end', Number.MAX_SAFE_INTEGER);
      const n = xd?.length;
      if (n === undefined) { out(0, { elem: DataType.INT64, dims: [undefined] }); return; }
      const s = Math.min(Math.max(normalizeAxis(start, n), 0), n), e = Math.min(Math.max(normalizeAxis(end, n), 0), n);
      const c = xd!.slice(s, e);
      out(0, { elem: DataType.INT64, dims: [c.length] });
      if (y) shapes.setInts(y, [...c]);
      return;
    }
    case 'Size': out(0, { elem: DataType.INT64, dims: [] }); return;
    case 'Constant': {
      const t = node.attributeValue<unknown>('value');
      if (t instanceof Tensor) {
        out(0, { elem: t.dataType, dims: t.dims });
        const c = tensorContents(t);
        if (c && y) shapes.setInts(y, c);
        return;
      }
      const vi = node.attribute('value_int'), vis = node.attribute('value_ints');
      if (vi && y) { out(0, { elem: DataType.INT64, dims: [] }); shapes.setInts(y, [Number(vi.value)]); return; }
      if (vis && y) { const c = (vis.value as number[]).map(Number); out(0, { elem: DataType.INT64, dims: [c.length] }); shapes.setInts(y, c); return; }
      if (node.attribute('value_float')) { out(0, { elem: DataType.FLOAT, dims: [] }); return; }
      if (node.attribute('value_floats')) { out(0, { elem: DataType.FLOAT, dims: [(node.attributeValue<number[]>('value_floats')).length] }); return; }
      out(0, UNKNOWN);
      return;
    }
    case 'ConstantOfShape': {
      const t = node.attributeValue<unknown>('value');
      const c = shapes.ints(x);
      const n = shapes.dims(x)?.[0];
      out(0, { elem: t instanceof Tensor ? t.dataType : DataType.FLOAT, dims: c ?? (typeof n === 'number' ? new Array<Dim>(n).fill(undefined) : undefined) });
      return;
    }
    case 'Range': {
      const [s, l, d] = ins.map((v) => shapes.ints(v)?.[0]);
      let len: Dim;
      if (typeof s === 'number' && typeof l === 'number' && typeof d === 'number') len = Math.max(Math.ceil((l - s) / d), 0);
      else if (s === 0 && d === 1) len = l;
      out(0, { elem: xe, dims: [len] });
      return;
    }
    case 'MatMul': {
      const a = xd, b = shapes.dims(ins[1]);
      if (!a || !b || a.length < 1 || b.length < 1) { out(0, { elem: xe, dims: undefined }); return; }
      const a2 = a.length === 1 ? [1, a[0]] : a, b2 = b.length === 1 ? [b[0], 1] : b;
      const batch = broadcastDims([a2.slice(0, -2), b2.slice(0, -2)]);
      let dims: Dim[] | undefined = batch ? [...batch, a2[a2.length - 2], b2[b2.length - 1]] : undefined;
      if (dims && a.length === 1) dims.splice(dims.length - 2, 1);
      if (dims && b.length === 1) dims = dims.slice(0, -1);
      out(0, { elem: xe, dims });
      return;
    }
    case 'Gemm': {
      const a = xd, b = shapes.dims(ins[1]);
      const m = a ? (attrInt(node, 'transA', 0) ? a[1] : a[0]) : undefined;
      const n = b ? (attrInt(node, 'transB', 0) ? b[0] : b[1]) : undefined;
      out(0, { elem: xe, dims: [m, n] });
      return;
    }
    case 'Gather': {
      const idx = ins[1];
      const id = shapes.dims(idx);
      if (!xd || !id) { out(0, { elem: xe, dims: undefined }); return; }
      const axis = normalizeAxis(attrInt(node, 'axis', 0), xd.length);
      out(0, { elem: xe, dims: [...xd.slice(0, axis), ...id, ...xd.slice(axis + 1)] });
      const c = shapes.ints(x), ic = shapes.numbers(idx);
      if (y && c && ic && xd.length === 1) shapes.setInts(y, ic.map((i) => c[i < 0 ? i + c.length : i]));
      return;
    }
    case 'GatherElements': out(0, { elem: xe, dims: shapes.dims(ins[1]) }); return;
    // Output is the data input with some elements replaced (packed NEFTune's segment lengths, Gather gradients).
    case 'CumSum': case 'ScatterElements': case 'ScatterND': case 'Scatter': same(); return;
    case 'OneHot': {
      const id = xd, depth = shapes.ints(ins[1])?.[0];
      const axis = attrInt(node, 'axis', -1);
      if (!id) { out(0, { elem: shapes.elem(ins[2]), dims: undefined }); return; }
      const dims = [...id];
      dims.splice(axis < 0 ? axis + id.length + 1 : axis, 0, depth);
      out(0, { elem: shapes.elem(ins[2]), dims });
      return;
    }
    case 'ReduceMean': case 'ReduceSum': case 'ReduceMax': case 'ReduceMin': case 'ReduceProd': {
      const keep = attrInt(node, 'keepdims', 1);
      const axes = axesOf(node, shapes, 1);
      const dynamicAxes = !node.attribute('axes') && ins[1] && ins[1].name !== '' && !axes;
      if (!xd || dynamicAxes) { out(0, { elem: xe, dims: undefined }); return; }
      const all = !axes || axes.length === 0;
      if (all && attrInt(node, 'noop_with_empty_axes', 0)) { same(); return; }
      const set = new Set(all ? xd.map((_, i) => i) : axes!.map((a) => normalizeAxis(a, xd.length)));
      out(0, { elem: xe, dims: keep ? xd.map((d, i) => (set.has(i) ? 1 : d)) : xd.filter((_, i) => !set.has(i)) });
      return;
    }
    case 'Reshape': {
      const target = shapes.ints(ins[1]);
      if (!target) { out(0, { elem: xe, dims: ins[1] ? (shapes.dims(ins[1])?.[0] !== undefined ? Array(shapes.dims(ins[1])![0] as number).fill(undefined) : undefined) : undefined }); return; }
      const allowZero = attrInt(node, 'allowzero', 0);
      const dims: Dim[] = target.map((d, i) => (d === 0 && !allowZero ? xd?.[i] : d));
      const minus = dims.indexOf(-1);
      if (minus >= 0) {
        dims[minus] = undefined;
        const total = xd && xd.every((d) => typeof d === 'number') ? (xd as number[]).reduce((p, q) => p * q, 1) : undefined;
        const rest = dims.filter((_, i) => i !== minus);
        if (total !== undefined && rest.every((d) => typeof d === 'number')) dims[minus] = total / (rest as number[]).reduce((p, q) => p * q, 1);
        else if (xd) {
          // [batch, sequence, 16] -> [-1, 16]-style: cancel equal dims, keep one leftover symbol.
          // Extents of 1 on either side change nothing ([batch, sequence, 16] -> [batch, -1, 16, 1]).
          const left = xd.filter((d) => d !== 1);
          for (const d of rest) { if (d === 1) continue; const k = left.indexOf(d); if (k >= 0 && d !== undefined) left.splice(k, 1); else { left.length = 0; left.push(undefined, undefined); break; } }
          if (left.length === 1) dims[minus] = left[0];
          else if (left.length === 0) dims[minus] = 1;
        }
      }
      out(0, { elem: xe, dims });
      if (y && shapes.ints(x)) shapes.setInts(y, shapes.ints(x)!);
      return;
    }
    case 'Flatten': {
      if (!xd) { out(0, { elem: xe, dims: [undefined, undefined] }); return; }
      const axis = normalizeAxis(attrInt(node, 'axis', 1), xd.length);
      out(0, { elem: xe, dims: [product(xd.slice(0, axis)), product(xd.slice(axis))] });
      return;
    }
    case 'Unsqueeze': {
      const axes = axesOf(node, shapes, 1);
      if (!xd || !axes) { out(0, { elem: xe, dims: undefined }); return; }
      const rank = xd.length + axes.length;
      const set = new Set(axes.map((a) => normalizeAxis(a, rank)));
      const dims: Dim[] = [];
      let k = 0;
      for (let i = 0; i < rank; i++) dims.push(set.has(i) ? 1 : xd[k++]);
      out(0, { elem: xe, dims });
      if (y && shapes.ints(x)) shapes.setInts(y, shapes.ints(x)!);
      return;
    }
    case 'Squeeze': {
      const axes = axesOf(node, shapes, 1);
      if (!xd) { out(0, { elem: xe, dims: undefined }); return; }
      const set = axes ? new Set(axes.map((a) => normalizeAxis(a, xd.length))) : new Set(xd.flatMap((d, i) => (d === 1 ? [i] : [])));
      out(0, { elem: xe, dims: xd.filter((_, i) => !set.has(i)) });
      if (y && shapes.ints(x)) shapes.setInts(y, shapes.ints(x)!);
      return;
    }
    case 'Transpose': {
      if (!xd) { out(0, { elem: xe, dims: undefined }); return; }
      const perm = attrInts(node, 'perm') ?? xd.map((_, i) => xd.length - 1 - i);
      out(0, { elem: xe, dims: perm.map((p) => xd[p]) });
      return;
    }
    case 'Concat': {
      const all = ins.map((v) => shapes.dims(v));
      if (all.some((d) => !d)) { out(0, { elem: xe, dims: undefined }); return; }
      const rank = all[0]!.length;
      const axis = normalizeAxis(attrInt(node, 'axis', 0), rank);
      const dims = [...all[0]!];
      dims[axis] = sumDims(all.map((d) => d![axis]));
      out(0, { elem: xe, dims });
      const cs = ins.map((v) => shapes.ints(v));
      if (y && rank === 1 && cs.every((c) => c)) shapes.setInts(y, cs.flatMap((c) => c!));
      return;
    }
    case 'Split': {
      if (!xd) { node.outputs.forEach((_, i) => out(i, { elem: xe, dims: undefined })); return; }
      const axis = normalizeAxis(attrInt(node, 'axis', 0), xd.length);
      const sizes = attrInts(node, 'split') ?? shapes.numbers(ins[1]);
      const n = node.outputs.length;
      const total = xd[axis];
      // No sizes: equal parts; num_outputs (opset 18) lets the last be smaller, each part ceil(total / n).
      const part = typeof total === 'number' ? (total % n === 0 || node.attribute('num_outputs') ? Math.ceil(total / n) : undefined) : undefined;
      node.outputs.forEach((_, i) => {
        const dims = [...xd];
        dims[axis] = sizes ? sizes[i] : part === undefined ? undefined : Math.min(part, (total as number) - part * i);
        out(i, { elem: xe, dims });
      });
      return;
    }
    case 'Slice': {
      const spec = sliceSpec(node, shapes, opset);
      if (!xd || !spec) { out(0, { elem: xe, dims: xd ? symbolicSlice(node, shapes, xd) : undefined }); return; }
      const dims = [...xd];
      for (const s of spec) {
        const axis = normalizeAxis(s.axis, xd.length);
        const r = sliceRange(s.start, s.end, s.step, xd[axis]);
        dims[axis] = r ? r.length : undefined;
      }
      out(0, { elem: xe, dims });
      const c = shapes.ints(x);
      if (y && c && xd.length === 1 && spec.length === 1 && spec[0]!.step === 1) {
        const r = sliceRange(spec[0]!.start, spec[0]!.end, 1, c.length);
        if (r) shapes.setInts(y, c.slice(r.begin, r.begin + (r.length as number)));
      }
      return;
    }
    case 'Expand': {
      const target = shapes.ints(ins[1]);
      out(0, { elem: xe, dims: target ? broadcastDims([xd, target]) : undefined });
      return;
    }
    case 'LayerNormalization':
      same();
      if (xd) {
        const axis = normalizeAxis(attrInt(node, 'axis', -1), xd.length);
        const stat = xd.map((d, i) => (i < axis ? d : 1));
        out(1, { elem: DataType.FLOAT, dims: stat });
        out(2, { elem: DataType.FLOAT, dims: stat });
      }
      return;
    case 'NonZero': out(0, { elem: DataType.INT64, dims: [xd?.length, undefined] }); return;
    case 'SoftmaxCrossEntropyLoss': {
      // scores [N, C, d1...], labels [N, d1...]: the loss has the labels' shape (reduction none) or none; log_prob the scores'.
      const reduction = node.attributeValue<Uint8Array | string>('reduction');
      const mode = reduction === undefined ? 'mean' : typeof reduction === 'string' ? reduction : new TextDecoder().decode(reduction);
      out(0, { elem: xe, dims: mode === 'none' ? shapes.dims(ins[1]) ?? (xd ? xd.filter((_, i) => i !== 1) : undefined) : [] });
      out(1, { elem: xe, dims: xd });
      return;
    }
    default:
      node.outputs.forEach((_, i) => out(i, UNKNOWN));
  }
}

function arith(op: string, a: Dim, b: Dim): Dim {
  if (typeof a !== 'number' || typeof b !== 'number') {
    if (op === 'Mul' && a === 1) return b;
    if (op === 'Mul' && b === 1) return a;
    if ((op === 'Add' || op === 'Sub') && b === 0) return a;
    return undefined;
  }
  switch (op) {
    case 'Add': return a + b;
    case 'Sub': return a - b;
    case 'Mul': return a * b;
    case 'Div': return Math.trunc(a / b);
    case 'Max': return Math.max(a, b);
    case 'Min': return Math.min(a, b);
    default: return undefined;
  }
}

function product(dims: readonly Dim[]): Dim {
  if (dims.every((d) => typeof d === 'number')) return (dims as number[]).reduce((p, q) => p * q, 1);
  const rest = dims.filter((d) => d !== 1);
  return rest.length === 1 ? rest[0] : undefined;
}
function sumDims(dims: readonly Dim[]): Dim {
  return dims.every((d) => typeof d === 'number') ? (dims as number[]).reduce((p, q) => p + q, 0) : undefined;
}

/**
 * Slice dims when some bound is a run-time value whose content is known symbolically, as in
 * optimum's `Slice(position_ids_buffer, 0, Shape(input_ids)[1])`: from 0 to a symbol `n` with step 1
 * keeps `n` elements (a buffer shorter than the sequence would fail in the model itself).
 */
function symbolicSlice(node: Node, shapes: ShapeTable, xd: readonly Dim[]): Dim[] {
  const unknown = xd.map(() => undefined);
  const get = (i: number) => { const v = node.input(i); return v && v.name !== '' ? shapes.ints(v) ?? null : undefined; };
  const starts = get(1), ends = get(2), axes = get(3), steps = get(4);
  if (!starts || !ends || axes === null || steps === null) return unknown;
  if ([...starts, ...(axes ?? []), ...(steps ?? [])].some((d) => typeof d !== 'number')) return unknown;
  const dims = [...xd];
  for (let i = 0; i < starts.length; i++) {
    const axis = normalizeAxis((axes?.[i] as number | undefined) ?? i, xd.length);
    const start = starts[i] as number, end = ends[i], step = (steps?.[i] as number | undefined) ?? 1;
    const r = typeof end === 'number' ? sliceRange(start, end, step, xd[axis]) : undefined;
    dims[axis] = r ? r.length : typeof end === 'string' && start === 0 && step === 1 ? end : undefined;
  }
  return dims;
}

export interface SliceAxis { axis: number; start: number; end: number; step: number }

/** Constant Slice parameters (attributes before opset 10, inputs after), or undefined when run-time. */
export function sliceSpec(node: Node, shapes: ShapeTable, opset: number): SliceAxis[] | undefined {
  let starts: number[] | undefined, ends: number[] | undefined, axes: number[] | undefined, steps: number[] | undefined;
  if (opset < 10) {
    starts = attrInts(node, 'starts'); ends = attrInts(node, 'ends'); axes = attrInts(node, 'axes');
  } else {
    const get = (i: number) => { const v = node.input(i); return v && v.name !== '' ? shapes.numbers(v) ?? null : undefined; };
    const s = get(1), e = get(2), a = get(3), st = get(4);
    if (s === null || e === null || a === null || st === null) return undefined;
    starts = s; ends = e; axes = a; steps = st;
  }
  if (!starts || !ends) return undefined;
  return starts.map((start, i) => ({ axis: axes?.[i] ?? i, start, end: ends![i]!, step: steps?.[i] ?? 1 }));
}

/**
 * The elements a slice keeps along one axis: begin and length, numbers where the dim is static.
 * With a symbolic dim, a non-negative start and an end that is negative or "to the end" still give
 * begin (and the distance to the end) statically; anything else is undefined.
 */
export function sliceRange(start: number, end: number, step: number, dim: Dim): { begin: number; length: Dim; padEnd: number } | undefined {
  if (step !== 1) return undefined;
  if (typeof dim === 'number') {
    const clamp = (v: number) => Math.min(Math.max(v < 0 ? v + dim : v, 0), dim);
    const b = clamp(start), e = Math.max(clamp(end), b);
    return { begin: b, length: e - b, padEnd: dim - e };
  }
  if (start < 0) return undefined;
  // A symbolic length is named after what it is cut from: slicing `sequence` by one gives `sequence-1`.
  const cut = (n: number): Dim => (n === 0 ? dim : typeof dim === 'string' ? `${dim}-${n}` : undefined);
  const toEnd = end >= 2 ** 53 || end > 1e15;
  if (toEnd) return { begin: start, length: cut(start), padEnd: 0 };
  if (end < 0) return { begin: start, length: cut(start - end), padEnd: -end };
  return undefined;
}
