/**
 * Reverse-mode autodiff in standard ONNX ops: from a scalar loss back to chosen parameters, one
 * rule per op, appended to the model's main graph. Nothing here needs a training build of ONNX
 * Runtime: gradient ops are ordinary ops (ReduceSum, MatMul, ScatterND, Pad, ...).
 */
import { DataType, dataTypeName } from '../graph/dtype.js';
import { OnnxModelError, errorMessage, optionName } from '../graph/errors.js';
import { attr, makeAttribute, tensorType, type AttributeInput } from '../graph/builder.js';
import { Node, Value, type Dim, type Graph, type Model } from '../graph/ir.js';
import { NameAllocator } from '../graph/names.js';
import { Tensor } from '../graph/tensor.js';
import { topologicalSort } from '../graph/toposort.js';
import { findEmbeddings } from '../passes/embeddings.js';
import { UnsupportedGradientError, TrainingOptionError } from './errors.js';
import { attrFloat, attrInt, attrInts, axesOf, inferShapes, normalizeAxis, sliceRange, sliceSpec, type ShapeTable } from './shapes.js';

/** Opsets 11-12 take axes as attributes and coerce Softmax to 2-D; the rules emit those forms too. */
export const MIN_TRAINING_OPSET = 11;
/** ScatterND with reduction=add (the Gather gradient that needs no O(N * V) one-hot) came with opset 16. */
export const SCATTER_ADD_OPSET = 16;

/** How Gather table gradients were formed: ScatterND add (opset >= 16), OneHot^T @ g (any opset), or no Gather on a path. */
export type GatherGradientForm = 'scatternd-add' | 'onehot-matmul' | 'none';

export interface GradientOptions {
  /**
   * Parameters to differentiate (initializers or float graph inputs); default every float
   * initializer that reaches the loss, except single-element ones (exporters store eps, 1/sqrt(d)
   * and 1.0 as initializers; a learned scalar can still be named here).
   */
  params?: readonly string[];
  /**
   * Table rows whose lookups give no gradient (torch `nn.Embedding(padding_idx)`): table name ->
   * row, or one row for the model's token-embedding table. Other uses of the table still count.
   */
  paddingIdx?: number | Readonly<Record<string, number>>;
}

export interface GradientResult {
  loss: Value;
  /** Chosen parameters in model order (still initializers: the caller decides what they become). */
  params: Value[];
  gradients: Map<Value, Value>;
  /** sumToShape reductions whose axes had to be found at run time (Shape/Equal/NonZero). */
  runtimeShapeFallbacks: number;
  /** Nodes the backward pass added. */
  addedNodes: number;
  gatherGradient: GatherGradientForm;
}

/** Ops whose outputs carry no gradient to their inputs (shape arithmetic, randomness, comparisons). */
const NON_DIFFERENTIABLE = new Set([
  'Shape', 'Size', 'RandomUniformLike', 'RandomNormalLike', 'RandomUniform', 'RandomNormal', 'EyeLike', 'Multinomial',
  'Equal', 'Less', 'LessOrEqual', 'Greater', 'GreaterOrEqual', 'Not', 'And', 'Or', 'Xor', 'NonZero', 'IsNaN', 'IsInf',
  'ConstantOfShape', 'Range', 'ArgMax', 'ArgMin', 'Sign', 'Floor', 'Ceil', 'Round', 'OneHot',
  'Constant',
]);

type Grads = (Value | undefined)[];

interface RuleContext {
  node: Node;
  /** Gradient of each output (undefined where none reaches it). */
  g: Grads;
  /** Whether input i needs a gradient. */
  need: boolean[];
  e: Emitter;
  s: ShapeTable;
}

interface Rule {
  /** Inputs that can carry a gradient. */
  inputs: (node: Node) => number[];
  /** A reason this node cannot be differentiated, checked before anything is built. */
  check?: (node: Node, s: ShapeTable, need: boolean[], opset: number) => string | undefined;
  grad: (c: RuleContext) => Grads;
}

const first = () => [0];
const firstTwo = () => [0, 1];

/** Emits backward nodes at the end of the graph, in the op forms of the model's opset. */
export class Emitter {
  added = 0;
  runtimeFallbacks = 0;
  gatherForm: GatherGradientForm = 'none';
  /** Table -> row whose lookups get no gradient (paddingIdx). */
  paddingRows = new Map<Value, number>();
  constructor(readonly graph: Graph, readonly names: NameAllocator, readonly opset: number, readonly s: ShapeTable) {}

  op(opType: string, inputs: (Value | null)[], attributes: Record<string, AttributeInput> = {}, role = opType.toLowerCase(), outputs = 1): Value {
    return this.ops(opType, inputs, attributes, role, outputs)[0]!;
  }
  ops(opType: string, inputs: (Value | null)[], attributes: Record<string, AttributeInput>, role: string, outputs: number): Value[] {
    const outs = Array.from({ length: outputs }, () => new Value(this.names.fresh(`grad__${role}`)));
    this.graph.append(new Node(opType, inputs, outs, {
      name: this.names.fresh(`grad__${opType}`),
      attributes: Object.entries(attributes).map(([k, v]) => makeAttribute(k, v)),
    }));
    this.added++;
    return outs;
  }
  constant(tensor: Tensor, role = 'const'): Value { return this.op('Constant', [], { value: attr.tensor(tensor) }, role); }
  ints(values: readonly number[]): Value { return this.constant(Tensor.fromArray(DataType.INT64, [values.length], values), 'ints'); }
  scalar(value: number, elem: DataType): Value { return this.constant(Tensor.fromArray(elem, [], [value]), 'scalar'); }

  reduce(op: 'ReduceSum' | 'ReduceMean', x: Value, axes: number[], keepdims: boolean): Value {
    const axesAsInput = op === 'ReduceSum' ? this.opset >= 13 : this.opset >= 18;
    if (axesAsInput) return this.op(op, [x, this.ints(axes)], { keepdims: attr.int(keepdims ? 1 : 0) });
    return this.op(op, [x], { axes: attr.ints(axes), keepdims: attr.int(keepdims ? 1 : 0) });
  }
  unsqueeze(x: Value, axes: number[]): Value {
    return this.opset >= 13 ? this.op('Unsqueeze', [x, this.ints(axes)]) : this.op('Unsqueeze', [x], { axes: attr.ints(axes) });
  }
  squeeze(x: Value, axes: number[]): Value {
    return this.opset >= 13 ? this.op('Squeeze', [x, this.ints(axes)]) : this.op('Squeeze', [x], { axes: attr.ints(axes) });
  }

  /** The shape of `x` as an int64 tensor: a constant when static, else Shape(x). */
  shapeOf(x: Value): Value {
    const dims = this.s.staticDims(x);
    return dims ? this.ints(dims) : this.op('Shape', [x]);
  }

  /** ReduceSum of `g` (of dims `gDims`) down to the shape of `x`, undoing a broadcast. */
  sumTo(g: Value, gDims: readonly Dim[] | undefined, x: Value, where: Node): Value {
    const xDims = this.s.dims(x);
    if (!gDims || !xDims) {
      throw new UnsupportedGradientError(`Cannot reduce the gradient of ${where.describe()} to the shape of ${x.name}: the rank of ${!gDims ? 'its output' : x.name} is unknown. Add value_info with ranks (run shape inference on the model) and try again.`, [{ op: where.opType, node: where.name ?? '', why: 'unknown rank' }]);
    }
    const lead = gDims.length - xDims.length;
    const axes: number[] = [];
    let uncertain = false;
    for (let i = 0; i < lead; i++) axes.push(i);
    for (let j = 0; j < xDims.length; j++) {
      const gd = gDims[lead + j], xd = xDims[j];
      if (xd === gd && xd !== undefined) continue;
      if (xd === 1) { if (gd !== 1) axes.push(lead + j); continue; }
      if (gd === 1 || typeof xd === 'number') continue; // x matched g there: a broadcast output of 1 means every input was 1
      if (othersAreOne(this.s, where, x, gDims.length, lead + j)) continue; // nothing else broadcasts there: x's extent is the output's
      uncertain = true;
    }
    let r = g;
    if (axes.length) {
      r = this.reduce('ReduceSum', g, axes, true);
      if (lead > 0) r = this.squeeze(r, axes.slice(0, lead));
    }
    if (uncertain && this.opset < 13) {
      throw new UnsupportedGradientError(`Cannot reduce the gradient of ${where.describe()} to the shape of ${x.name}: which axes it broadcasts along is only known at run time, and ReduceSum takes run-time axes from opset 13 on (the model imports opset ${this.opset}). Declare static or named dims for ${x.name} and ${where.outputs[0]?.name ?? 'the output'} in value_info, or convert the model to opset 13 or newer.`, [{ op: where.opType, node: where.name ?? '', why: 'run-time broadcast axes before opset 13' }]);
    }
    if (uncertain) {
      // Run-time axes where x has extent 1 (reducing an axis where g is 1 as well changes nothing).
      this.runtimeFallbacks++;
      const ones = this.op('Equal', [this.op('Shape', [x]), this.ints([1])]);
      const axesRt = this.op('Reshape', [this.op('NonZero', [ones]), this.ints([-1])]);
      r = this.op('ReduceSum', [r, axesRt], { keepdims: attr.int(1), noop_with_empty_axes: attr.int(1) });
    }
    return r;
  }

  /** Sum of several gradient contributions. */
  sum(values: Value[]): Value {
    if (values.length === 1) return values[0]!;
    if (values.length === 2) return this.op('Add', values);
    return this.op('Sum', values);
  }
}

const ELEMENTWISE_BROADCAST = new Set(['Add', 'Sub', 'Mul', 'Div', 'Pow', 'Max', 'Min', 'Where']);

/**
 * For an element-wise broadcasting node: whether every input other than `x` has extent 1 (or no
 * axis) at output axis `axis`, so the output's extent there is x's; x itself may repeat (x * x).
 */
function othersAreOne(s: ShapeTable, node: Node, x: Value, outRank: number, axis: number): boolean {
  if (!ELEMENTWISE_BROADCAST.has(node.opType)) return false;
  return node.inputs.every((v) => {
    if (!v || v === x) return true;
    const d = s.dims(v);
    if (!d) return false;
    const k = axis - (outRank - d.length);
    return k < 0 || d[k] === 1;
  });
}

function elemOf(s: ShapeTable, v: Value, node: Node): DataType {
  const e = s.elem(v);
  if (e === undefined) throw new UnsupportedGradientError(`The element type of ${v.name} (read by ${node.describe()}) is unknown; declare it in value_info.`, [{ op: node.opType, node: node.name ?? '', why: 'unknown element type' }]);
  return e;
}

/** Transposes the last two axes. */
function swapLast(e: Emitter, x: Value, rank: number): Value {
  const perm = Array.from({ length: rank }, (_, i) => i);
  perm[rank - 1] = rank - 2; perm[rank - 2] = rank - 1;
  return e.op('Transpose', [x], { perm: attr.ints(perm) });
}

function isConstantFalse(s: ShapeTable, v: Value | null): boolean | undefined {
  if (!v || v.name === '') return true;
  const t = v.initializer ?? (v.producer?.opType === 'Constant' ? v.producer.attributeValue<unknown>('value') : undefined);
  if (t instanceof Tensor && t.storage !== 'external') return !(t.toArray() as Uint8Array)[0];
  void s;
  return undefined;
}

const reshapeLike = (c: RuleContext): Grads => [c.e.op('Reshape', [c.g[0]!, c.e.shapeOf(c.node.input(0)!)])];

const RULES: Record<string, Rule> = {
  Identity: { inputs: first, grad: (c) => [c.g[0]] },
  Add: {
    check: ranksKnown,
    inputs: firstTwo,
    grad: ({ node, g, need, e, s }) => [
      need[0] ? e.sumTo(g[0]!, s.dims(node.outputs[0]), node.input(0)!, node) : undefined,
      need[1] ? e.sumTo(g[0]!, s.dims(node.outputs[0]), node.input(1)!, node) : undefined,
    ],
  },
  Sub: {
    check: ranksKnown,
    inputs: firstTwo,
    grad: ({ node, g, need, e, s }) => [
      need[0] ? e.sumTo(g[0]!, s.dims(node.outputs[0]), node.input(0)!, node) : undefined,
      need[1] ? e.sumTo(e.op('Neg', [g[0]!]), s.dims(node.outputs[0]), node.input(1)!, node) : undefined,
    ],
  },
  Mul: {
    check: ranksKnown,
    inputs: firstTwo,
    grad: ({ node, g, need, e, s }) => {
      const [a, b] = [node.input(0)!, node.input(1)!];
      const y = s.dims(node.outputs[0]);
      return [need[0] ? e.sumTo(e.op('Mul', [g[0]!, b]), y, a, node) : undefined, need[1] ? e.sumTo(e.op('Mul', [g[0]!, a]), y, b, node) : undefined];
    },
  },
  Div: {
    check: ranksKnown,
    inputs: firstTwo,
    grad: ({ node, g, need, e, s }) => {
      const [a, b] = [node.input(0)!, node.input(1)!];
      const y = s.dims(node.outputs[0]);
      return [
        need[0] ? e.sumTo(e.op('Div', [g[0]!, b]), y, a, node) : undefined,
        need[1] ? e.sumTo(e.op('Neg', [e.op('Div', [e.op('Mul', [g[0]!, node.outputs[0]!]), b])]), y, b, node) : undefined,
      ];
    },
  },
  Neg: { inputs: first, grad: ({ g, e }) => [e.op('Neg', [g[0]!])] },
  Sqrt: { inputs: first, grad: ({ node, g, e, s }) => [e.op('Div', [e.op('Mul', [g[0]!, e.scalar(0.5, elemOf(s, node.input(0)!, node))]), node.outputs[0]!])] },
  Reciprocal: { inputs: first, grad: ({ node, g, e }) => { const y = node.outputs[0]!; return [e.op('Neg', [e.op('Mul', [g[0]!, e.op('Mul', [y, y])])])]; } },
  Exp: { inputs: first, grad: ({ node, g, e }) => [e.op('Mul', [g[0]!, node.outputs[0]!])] },
  Log: { inputs: first, grad: ({ node, g, e }) => [e.op('Div', [g[0]!, node.input(0)!])] },
  Tanh: {
    inputs: first,
    grad: ({ node, g, e, s }) => {
      const y = node.outputs[0]!;
      return [e.op('Mul', [g[0]!, e.op('Sub', [e.scalar(1, elemOf(s, y, node)), e.op('Mul', [y, y])])])];
    },
  },
  Sigmoid: {
    inputs: first,
    grad: ({ node, g, e, s }) => {
      const y = node.outputs[0]!;
      return [e.op('Mul', [g[0]!, e.op('Mul', [y, e.op('Sub', [e.scalar(1, elemOf(s, y, node)), y])])])];
    },
  },
  Relu: {
    inputs: first,
    grad: ({ node, g, e, s }) => {
      const x = node.input(0)!;
      const zero = e.scalar(0, elemOf(s, x, node));
      return [e.op('Where', [e.op('Greater', [x, zero]), g[0]!, zero])];
    },
  },
  Erf: {
    inputs: first,
    grad: ({ node, g, e, s }) => {
      const x = node.input(0)!;
      const k = e.scalar(2 / Math.sqrt(Math.PI), elemOf(s, x, node));
      return [e.op('Mul', [g[0]!, e.op('Mul', [k, e.op('Exp', [e.op('Neg', [e.op('Mul', [x, x])])])])])];
    },
  },
  Gelu: {
    inputs: first,
    grad: ({ node, g, e, s }) => {
      const x = node.input(0)!;
      const elem = elemOf(s, x, node);
      const k = (v: number) => e.scalar(v, elem);
      const mul = (...vs: Value[]) => vs.reduce((p, q) => e.op('Mul', [p, q]));
      const x2 = mul(x, x);
      let d: Value;
      if (node.attributeValue<string>('approximate') === 'tanh') {
        // y = x/2 (1 + t), t = tanh(c0 (x + c1 x^3)): dy/dx = (1 + t)/2 + x/2 (1 - t^2) c0 (1 + 3 c1 x^2)
        const c0 = Math.sqrt(2 / Math.PI), c1 = 0.044715;
        const t = e.op('Tanh', [mul(k(c0), e.op('Add', [x, mul(k(c1), x2, x)]))]);
        const half1t = mul(k(0.5), e.op('Add', [k(1), t]));
        const inner = mul(k(0.5 * c0), x, e.op('Sub', [k(1), mul(t, t)]), e.op('Add', [k(1), mul(k(3 * c1), x2)]));
        d = e.op('Add', [half1t, inner]);
      } else {
        // y = x Phi(x): dy/dx = Phi(x) + x phi(x)
        const cdf = mul(k(0.5), e.op('Add', [k(1), e.op('Erf', [mul(x, k(Math.SQRT1_2))])]));
        const pdf = mul(k(1 / Math.sqrt(2 * Math.PI)), e.op('Exp', [mul(x2, k(-0.5))]));
        d = e.op('Add', [cdf, mul(x, pdf)]);
      }
      return [e.op('Mul', [g[0]!, d])];
    },
  },
  Pow: {
    check: ranksKnown,
    inputs: first,
    grad: ({ node, g, e, s }) => {
      const x = node.input(0)!;
      const elem = elemOf(s, x, node);
      let p = node.input(1)!;
      if (s.elem(p) !== elem) p = e.op('Cast', [p], { to: attr.int(elem) });
      const d = e.op('Mul', [p, e.op('Pow', [x, e.op('Sub', [p, e.scalar(1, elem)])])]);
      return [e.sumTo(e.op('Mul', [g[0]!, d]), s.dims(node.outputs[0]), x, node)];
    },
  },
  MatMul: {
    inputs: firstTwo,
    check: (node, s) => ((s.rank(node.input(0)) ?? 0) < 2 || (s.rank(node.input(1)) ?? 0) < 2 ? 'an operand is 1-D or of unknown rank' : undefined),
    grad: ({ node, g, need, e, s }) => {
      const [a, b] = [node.input(0)!, node.input(1)!];
      const y = s.dims(node.outputs[0])!;
      const ad = s.dims(a)!, bd = s.dims(b)!;
      const batch = y.slice(0, -2);
      return [
        need[0] ? e.sumTo(e.op('MatMul', [g[0]!, swapLast(e, b, bd.length)]), [...batch, ad[ad.length - 2], ad[ad.length - 1]], a, node) : undefined,
        need[1] ? e.sumTo(e.op('MatMul', [swapLast(e, a, ad.length), g[0]!]), [...batch, bd[bd.length - 2], bd[bd.length - 1]], b, node) : undefined,
      ];
    },
  },
  Gemm: {
    inputs: () => [0, 1, 2],
    grad: ({ node, g, need, e, s }) => {
      const [a, b, cIn] = [node.input(0)!, node.input(1)!, node.input(2)];
      const alpha = attrFloat(node, 'alpha', 1), beta = attrFloat(node, 'beta', 1);
      const tA = attrInt(node, 'transA', 0), tB = attrInt(node, 'transB', 0);
      const gemm = (p: Value, q: Value, ta: number, tb: number) => e.op('Gemm', [p, q], { alpha: attr.float(alpha), transA: attr.int(ta), transB: attr.int(tb) });
      const gy = g[0]!;
      const dA = !need[0] ? undefined : tA ? gemm(b, gy, tB, 1) : gemm(gy, b, 0, tB ? 0 : 1);
      const dB = !need[1] ? undefined : tB ? gemm(gy, a, 1, tA) : gemm(a, gy, tA ? 0 : 1, 0);
      let dC: Value | undefined;
      if (need[2] && cIn) {
        const scaled = beta === 1 ? gy : e.op('Mul', [gy, e.scalar(beta, elemOf(s, cIn, node))]);
        dC = e.sumTo(scaled, s.dims(node.outputs[0]), cIn, node);
      }
      return [dA, dB, dC];
    },
  },
  Gather: {
    inputs: first,
    check: (node, s) => (s.rank(node.input(0)) === undefined || s.rank(node.input(1)) === undefined ? 'unknown rank' : undefined),
    grad: ({ node, g, e, s }) => {
      const table = node.input(0)!, ids = node.input(1)!;
      const elem = elemOf(s, table, node);
      const td = s.dims(table)!;
      const idRank = s.rank(ids)!;
      const axis = normalizeAxis(attrInt(node, 'axis', 0), td.length);
      // Along another axis (DistilBERT's hidden[:, 0]): the same scatter on the table with that axis moved to the front.
      const tablePerm = [axis, ...td.keys()].filter((a, i) => i === 0 || a !== axis);
      const gradPerm = [...Array.from({ length: idRank }, (_, i) => axis + i), ...Array.from({ length: axis }, (_, i) => i), ...Array.from({ length: td.length - 1 - axis }, (_, i) => axis + idRank + i)];
      const front = axis === 0 ? g[0]! : e.op('Transpose', [g[0]!], { perm: attr.ints(gradPerm) });
      const frontDims = tablePerm.map((a) => td[a]);
      const frontShape = axis === 0 ? e.shapeOf(table) : frontDims.every((d) => typeof d === 'number') ? e.ints(frontDims as number[]) : e.op('Gather', [e.op('Shape', [table]), e.ints(tablePerm)], { axis: attr.int(0) });
      // A scalar row count: Mod by a [1] tensor would give a scalar id a dimension.
      const axisDim = e.constant(Tensor.fromArray(DataType.INT64, [], BigInt64Array.from([BigInt(typeof td[axis] === 'number' ? td[axis] : axis)])));
      const rows: Value = typeof td[axis] === 'number' ? axisDim : e.op('Gather', [e.op('Shape', [table]), axisDim], { axis: attr.int(0) });
      let dense: Value;
      if (e.opset >= SCATTER_ADD_OPSET) {
        e.gatherForm = 'scatternd-add';
        // Negative ids count from the end, as in Gather; Mod makes them row numbers for ScatterND.
        const ids64 = s.elem(ids) === DataType.INT64 ? ids : e.op('Cast', [ids], { to: attr.int(DataType.INT64) });
        const rowIds = e.op('Mod', [ids64, rows]);
        const zeros = e.op('ConstantOfShape', [frontShape], { value: attr.tensor(Tensor.fromArray(elem, [1], [0])) });
        dense = e.op('ScatterND', [zeros, e.unsqueeze(rowIds, [-1]), front], { reduction: attr.string('add') });
      } else {
        // Portable form before opset 16: OneHot(ids)^T @ g, O(N * V) memory.
        if (e.gatherForm === 'none') e.gatherForm = 'onehot-matmul';
        // OneHot needs indices of rank >= 1: a scalar id is a list of one.
        const oneHot = oneHotAs(e, idRank ? ids : e.unsqueeze(ids, [0]), rows, elem);
        const flatOneHot = e.op('Flatten', [oneHot], { axis: attr.int(Math.max(idRank, 1)) });
        const flatG = e.op('Flatten', [front], { axis: attr.int(idRank) });
        dense = e.op('MatMul', [e.op('Transpose', [flatOneHot], { perm: attr.ints([1, 0]) }), flatG]);
        if (td.length !== 2 || axis !== 0) dense = e.op('Reshape', [dense, frontShape]);
      }
      if (axis !== 0) return [e.op('Transpose', [dense], { perm: attr.ints(tablePerm.map((_, i) => tablePerm.indexOf(i))) })];
      const padRow = e.paddingRows.get(table);
      if (padRow === undefined) return [dense];
      // paddingIdx: overwrite this lookup's gradient row with zeros (ScatterND without reduction, opset 11).
      const rowShape = typeof td[0] === 'number' && td.every((d) => typeof d === 'number') ? e.ints(td.slice(1) as number[]) : e.op('Slice', [e.op('Shape', [table]), e.ints([1]), e.ints([td.length])]);
      const zeroRow = e.op('ConstantOfShape', [rowShape], { value: attr.tensor(Tensor.fromArray(elem, [1], [0])) });
      return [e.op('ScatterND', [dense, e.constant(Tensor.fromArray(DataType.INT64, [1, 1], BigInt64Array.from([BigInt(padRow)])), 'padding_row'), e.unsqueeze(zeroRow, [0])])];
    },
  },
  Softmax: {
    inputs: first,
    check: softmaxCheck,
    grad: ({ node, g, e, s }) => {
      const y = node.outputs[0]!;
      const gy = e.op('Mul', [g[0]!, y]);
      return [e.op('Mul', [y, e.op('Sub', [g[0]!, e.reduce('ReduceSum', gy, softmaxAxes(node, s, e.opset), true)])])];
    },
  },
  LogSoftmax: {
    inputs: first,
    check: softmaxCheck,
    grad: ({ node, g, e, s }) => [e.op('Sub', [g[0]!, e.op('Mul', [e.op('Exp', [node.outputs[0]!]), e.reduce('ReduceSum', g[0]!, softmaxAxes(node, s, e.opset), true)])])],
  },
  ReduceSum: { inputs: first, check: reduceCheck, grad: (c) => reduceGrad(c, false) },
  ReduceMean: { inputs: first, check: reduceCheck, grad: (c) => reduceGrad(c, true) },
  Reshape: { inputs: first, grad: reshapeLike },
  Flatten: { inputs: first, grad: reshapeLike },
  Squeeze: { inputs: first, grad: reshapeLike },
  Unsqueeze: { inputs: first, grad: reshapeLike },
  Transpose: {
    inputs: first,
    check: (node, s) => (attrInts(node, 'perm') || s.rank(node.input(0)) !== undefined ? undefined : 'no perm and unknown rank'),
    grad: ({ node, g, e, s }) => {
      const rank = s.rank(node.input(0))!;
      const perm = attrInts(node, 'perm') ?? Array.from({ length: rank }, (_, i) => rank - 1 - i);
      const inverse = perm.map((_, i) => perm.indexOf(i));
      return [e.op('Transpose', [g[0]!], { perm: attr.ints(inverse) })];
    },
  },
  Concat: {
    inputs: (node) => node.inputs.map((_, i) => i),
    check: (node, s) => (s.rank(node.input(0)) === undefined ? 'unknown rank' : undefined),
    grad: ({ node, g, need, e, s }) => {
      const rank = s.rank(node.input(0))!;
      const axis = normalizeAxis(attrInt(node, 'axis', 0), rank);
      // Offsets along the axis: static where every earlier extent is, else read at run time.
      let offset: Value | number = 0;
      return node.inputs.map((x, i) => {
        const extentStatic = s.dims(x)?.[axis];
        const extent: Value | number = typeof extentStatic === 'number' ? extentStatic : e.op('Slice', [e.op('Shape', [x!]), e.ints([axis]), e.ints([axis + 1])]);
        const start = offset;
        const end: Value | number = typeof start === 'number' && typeof extent === 'number' ? start + extent : e.op('Add', [asInts(e, start), asInts(e, extent)]);
        offset = end;
        if (!need[i]) return undefined;
        return e.op('Slice', [g[0]!, asInts(e, start), asInts(e, end), e.ints([axis])]);
      });
    },
  },
  Slice: {
    inputs: first,
    check: (node, s, _need, opset) => {
      const spec = sliceSpec(node, s, opset);
      const dims = s.dims(node.input(0));
      if (!spec || !dims) return 'run-time starts/ends/axes/steps or unknown rank';
      for (const a of spec) if (!sliceRange(a.start, a.end, a.step, dims[normalizeAxis(a.axis, dims.length)])) return `axis ${a.axis}: step ${a.step} or bounds [${a.start}, ${a.end}) against a symbolic dim (only step 1 with a non-negative start and a negative or open end)`;
      return undefined;
    },
    grad: ({ node, g, e, s }) => {
      const dims = s.dims(node.input(0))!;
      const pads = new Array<number>(dims.length * 2).fill(0);
      for (const a of sliceSpec(node, s, e.opset)!) {
        const axis = normalizeAxis(a.axis, dims.length);
        const r = sliceRange(a.start, a.end, a.step, dims[axis])!;
        pads[axis] = r.begin;
        pads[axis + dims.length] = r.padEnd;
      }
      return [e.op('Pad', [g[0]!, e.ints(pads)])];
    },
  },
  Split: {
    inputs: first,
    check: (node, s) => (s.rank(node.input(0)) === undefined ? 'unknown rank' : undefined),
    grad: ({ node, g, e, s }) => {
      const elem = elemOf(s, node.input(0)!, node);
      const parts = node.outputs.map((out, i) => g[i] ?? e.op('ConstantOfShape', [e.shapeOf(out!)], { value: attr.tensor(Tensor.fromArray(elem, [1], [0])) }));
      return [e.op('Concat', parts, { axis: attr.int(attrInt(node, 'axis', 0)) })];
    },
  },
  Expand: { inputs: first, check: ranksKnown, grad: ({ node, g, e, s }) => [e.sumTo(g[0]!, s.dims(node.outputs[0]), node.input(0)!, node)] },
  Where: {
    check: ranksKnown,
    inputs: () => [1, 2],
    grad: ({ node, g, need, e, s }) => {
      const cond = node.input(0)!;
      const y = s.dims(node.outputs[0]);
      const zero = e.scalar(0, elemOf(s, node.outputs[0]!, node));
      return [
        undefined,
        need[1] ? e.sumTo(e.op('Where', [cond, g[0]!, zero]), y, node.input(1)!, node) : undefined,
        need[2] ? e.sumTo(e.op('Where', [cond, zero, g[0]!]), y, node.input(2)!, node) : undefined,
      ];
    },
  },
  Max: { inputs: (node) => node.inputs.map((_, i) => i), check: ranksKnown, grad: (c) => selectGrad(c) },
  Min: { inputs: (node) => node.inputs.map((_, i) => i), check: ranksKnown, grad: (c) => selectGrad(c) },
  Cast: {
    inputs: first,
    grad: ({ node, g, e, s }) => [e.op('Cast', [g[0]!], { to: attr.int(elemOf(s, node.input(0)!, node)) })],
  },
  Dropout: {
    inputs: first,
    check: (node, s) => {
      const training = isConstantFalse(s, node.input(2));
      if (training === undefined) return 'training_mode is decided at run time (make it a constant)';
      return undefined;
    },
    grad: ({ node, g, e, s }) => {
      if (isConstantFalse(s, node.input(2))) return [g[0]];
      const elem = elemOf(s, node.input(0)!, node);
      const mask = e.op('Cast', [node.outputs[1]!], { to: attr.int(elem) });
      const ratioIn = node.input(1);
      const ratio = ratioIn && ratioIn.name !== '' ? (s.elem(ratioIn) === elem ? ratioIn : e.op('Cast', [ratioIn], { to: attr.int(elem) })) : e.scalar(0.5, elem);
      const keep = e.op('Sub', [e.scalar(1, elem), ratio]);
      return [e.op('Div', [e.op('Mul', [g[0]!, mask]), keep])];
    },
  },
  LayerNormalization: {
    inputs: () => [0, 1, 2],
    check: (node, s) => (s.rank(node.input(0)) === undefined ? 'unknown rank' : node.outputs.slice(1).some((o) => o && o.uses.length) ? 'its Mean/InvStdDev outputs are used' : undefined),
    grad: ({ node, g, need, e, s }) => {
      const x = node.input(0)!, scale = node.input(1)!, bias = node.input(2);
      const rank = s.rank(x)!;
      const elem = elemOf(s, x, node);
      const axis = normalizeAxis(attrInt(node, 'axis', -1), rank);
      const axes = Array.from({ length: rank - axis }, (_, i) => axis + i);
      const eps = attrFloat(node, 'epsilon', 1e-5);
      const gy = g[0]!;
      const y = s.dims(node.outputs[0]);
      const mean = e.reduce('ReduceMean', x, axes, true);
      const xc = e.op('Sub', [x, mean]);
      const variance = e.reduce('ReduceMean', e.op('Mul', [xc, xc]), axes, true);
      const inv = e.op('Reciprocal', [e.op('Sqrt', [e.op('Add', [variance, e.scalar(eps, elem)])])]);
      const xhat = e.op('Mul', [xc, inv]);
      let dx: Value | undefined;
      if (need[0]) {
        const gs = e.op('Mul', [gy, scale]);
        const t1 = e.reduce('ReduceMean', gs, axes, true);
        const t2 = e.op('Mul', [xhat, e.reduce('ReduceMean', e.op('Mul', [gs, xhat]), axes, true)]);
        dx = e.op('Mul', [inv, e.op('Sub', [e.op('Sub', [gs, t1]), t2])]);
      }
      return [
        dx,
        need[1] ? e.sumTo(e.op('Mul', [gy, xhat]), y, scale, node) : undefined,
        need[2] && bias ? e.sumTo(gy, y, bias, node) : undefined,
      ];
    },
  },
  RMSNormalization: {
    inputs: firstTwo,
    check: (node, s) => (s.rank(node.input(0)) === undefined ? 'unknown rank' : undefined),
    grad: ({ node, g, need, e, s }) => {
      const x = node.input(0)!, scale = node.input(1)!;
      const rank = s.rank(x)!;
      const elem = elemOf(s, x, node);
      const axis = normalizeAxis(attrInt(node, 'axis', -1), rank);
      const axes = Array.from({ length: rank - axis }, (_, i) => axis + i);
      const gy = g[0]!;
      // y = scale * x * r, r = 1/sqrt(mean(x^2) + eps): dx = r (g s - x_hat mean(g s x_hat))
      const meanSquare = e.reduce('ReduceMean', e.op('Mul', [x, x]), axes, true);
      const inv = e.op('Reciprocal', [e.op('Sqrt', [e.op('Add', [meanSquare, e.scalar(attrFloat(node, 'epsilon', 1e-5), elem)])])]);
      const xhat = e.op('Mul', [x, inv]);
      let dx: Value | undefined;
      if (need[0]) {
        const gs = e.op('Mul', [gy, scale]);
        dx = e.op('Mul', [inv, e.op('Sub', [gs, e.op('Mul', [xhat, e.reduce('ReduceMean', e.op('Mul', [gs, xhat]), axes, true)])])]);
      }
      return [dx, need[1] ? e.sumTo(e.op('Mul', [gy, xhat]), s.dims(node.outputs[0]), scale, node) : undefined];
    },
  },
  SoftmaxCrossEntropyLoss: {
    inputs: first,
    check: (node, s) => (s.rank(node.input(0)) === undefined ? 'unknown rank' : undefined),
    grad: ({ node, g, e, s }) => {
      // (softmax(scores) - one_hot(labels)) * per-sample weight * g; the class axis is 1.
      const scores = node.input(0)!, labels = node.input(1)!, weights = node.input(2);
      const elem = elemOf(s, scores, node);
      const reduction = node.attributeValue<Uint8Array | string>('reduction');
      const mode = reduction === undefined ? 'mean' : typeof reduction === 'string' ? reduction : new TextDecoder().decode(reduction);
      const ignore = node.attribute('ignore_index') ? attrInt(node, 'ignore_index', 0) : undefined;
      const logp = node.outputs[1] && node.outputs[1].name !== '' ? node.outputs[1] : e.op('LogSoftmax', [scores], { axis: attr.int(1) });
      const probs = e.op('Exp', [logp]);
      const classes = e.op('Slice', [e.op('Shape', [scores]), e.ints([1]), e.ints([2])]);
      let target = labels, weight: Value | undefined;
      if (ignore !== undefined) {
        const ignoreValue = e.constant(Tensor.fromArray(s.elem(labels) ?? DataType.INT64, [], [ignore]));
        const kept = e.op('Not', [e.op('Equal', [labels, ignoreValue])]);
        target = e.op('Where', [kept, labels, e.constant(Tensor.fromArray(s.elem(labels) ?? DataType.INT64, [], [0]))]);
        weight = e.op('Cast', [kept], { to: attr.int(elem) });
      }
      if (weights && weights.name !== '') {
        const w = e.op('Gather', [weights, target], { axis: attr.int(0) });
        weight = weight ? e.op('Mul', [weight, w]) : w;
      }
      // int64 indices: ORT's CPU OneHot has no int32-indices, int64-depth kernel.
      const target64 = s.elem(labels) === DataType.INT64 ? target : e.op('Cast', [target], { to: attr.int(DataType.INT64) });
      const oneHot = e.op('OneHot', [target64, classes, e.constant(Tensor.fromArray(DataType.FLOAT, [2], [0, 1]))], { axis: attr.int(1) });
      const hot = elem === DataType.FLOAT ? oneHot : e.op('Cast', [oneHot], { to: attr.int(elem) });
      let perSample: Value = g[0] ?? e.scalar(0, elem);
      if (mode === 'mean') {
        const count = weight ? e.op('ReduceSum', [weight], { keepdims: attr.int(0) }) : e.op('Cast', [e.op('Size', [labels])], { to: attr.int(elem) });
        perSample = e.op('Div', [perSample, count]);
      }
      if (weight) perSample = e.op('Mul', [perSample, weight]);
      // perSample is a scalar (mean, sum) or has the labels' shape (none): expand it over the class axis.
      if (mode === 'none' || weight) perSample = e.unsqueeze(perSample, [1]);
      let dScores = g[0] ? e.op('Mul', [e.op('Sub', [probs, hot]), perSample]) : undefined;
      if (g[1]) {
        const viaLogProb = e.op('Sub', [g[1], e.op('Mul', [probs, e.reduce('ReduceSum', g[1], [1], true)])]);
        dScores = dScores ? e.op('Add', [dScores, viaLogProb]) : viaLogProb;
      }
      return [dScores];
    },
  },
};

/** OneHot in float32 (the values type ONNX Runtime's CPU kernels take), cast to `elem`. */
export function oneHotAs(e: Emitter, ids: Value, depth: Value, elem: DataType): Value {
  const oneHot = e.op('OneHot', [ids, depth, e.constant(Tensor.fromArray(DataType.FLOAT, [2], [0, 1]))], { axis: attr.int(-1) });
  return elem === DataType.FLOAT ? oneHot : e.op('Cast', [oneHot], { to: attr.int(elem) });
}

function asInts(e: Emitter, v: Value | number): Value { return typeof v === 'number' ? e.ints([v]) : v; }

/** Broadcasting rules reduce to each input's shape: the ranks must be known. */
function ranksKnown(node: Node, s: ShapeTable, need: boolean[]): string | undefined {
  if (s.rank(node.outputs[0]) === undefined) return 'unknown rank';
  return node.inputs.some((v, i) => need[i] && s.rank(v) === undefined) ? 'unknown rank' : undefined;
}

/**
 * Axes a (Log)Softmax normalizes over: `axis` alone from opset 13; before it, the input is
 * coerced to 2-D at `axis` (default 1), so every axis from there to the last.
 */
function softmaxAxes(node: Node, s: ShapeTable, opset: number): number[] {
  if (opset >= 13) return [attrInt(node, 'axis', -1)];
  const rank = s.rank(node.input(0))!;
  const axis = normalizeAxis(attrInt(node, 'axis', 1), rank);
  return Array.from({ length: rank - axis }, (_, i) => axis + i);
}

function softmaxCheck(node: Node, s: ShapeTable, _need: boolean[], opset: number): string | undefined {
  return opset < 13 && s.rank(node.input(0)) === undefined ? 'unknown rank (before opset 13 the axes it normalizes over depend on it)' : undefined;
}

/** Max/Min: the gradient goes to the inputs equal to the result, split evenly on ties (as torch's maximum does). */
function selectGrad({ node, g, need, e, s }: RuleContext): Grads {
  const y = node.outputs[0]!;
  if (node.inputs.length === 1) return [g[0]];
  const elem = elemOf(s, y, node);
  const hits = node.inputs.map((x) => e.op('Cast', [e.op('Equal', [x!, y])], { to: attr.int(elem) }));
  const share = e.op('Div', [g[0]!, e.sum(hits)]);
  return node.inputs.map((x, i) => (need[i] ? e.sumTo(e.op('Mul', [share, hits[i]!]), s.dims(y), x!, node) : undefined));
}

function reduceCheck(node: Node, s: ShapeTable): string | undefined {
  const hasAxesInput = !node.attribute('axes') && node.input(1) && node.input(1)!.name !== '';
  if (hasAxesInput && !axesOf(node, s, 1)) return 'axes are decided at run time';
  if (s.rank(node.input(0)) === undefined) return 'unknown rank';
  return undefined;
}

function reduceGrad({ node, g, e, s }: RuleContext, mean: boolean): Grads {
  const x = node.input(0)!;
  const xd = s.dims(x)!;
  const axesGiven = axesOf(node, s, 1);
  if ((!axesGiven || axesGiven.length === 0) && attrInt(node, 'noop_with_empty_axes', 0)) return [g[0]];
  const axes = !axesGiven || axesGiven.length === 0 ? xd.map((_, i) => i) : axesGiven.map((a) => normalizeAxis(a, xd.length)).sort((p, q) => p - q);
  let gk = g[0]!;
  if (!attrInt(node, 'keepdims', 1)) gk = e.unsqueeze(gk, axes);
  let out = e.op('Expand', [gk, e.shapeOf(x)]);
  if (mean) {
    const elem = elemOf(s, x, node);
    const reduced = axes.map((a) => xd[a]);
    const count = reduced.every((d) => typeof d === 'number')
      ? e.scalar((reduced as number[]).reduce((p, q) => p * q, 1), elem)
      : e.op('Div', [e.op('Cast', [e.op('Size', [x])], { to: attr.int(elem) }), e.op('Cast', [e.op('Size', [node.outputs[0]!])], { to: attr.int(elem) })]);
    out = e.op('Div', [out, count]);
  }
  return [out];
}

/** Inputs of `node` that can carry a gradient (none for non-differentiable ops; every float input for ops without a rule). */
function differentiableInputs(node: Node, s: ShapeTable): number[] {
  if (node.domain !== '' && node.domain !== 'ai.onnx') return node.inputs.flatMap((v, i) => (v && maybeFloat(s, v) ? [i] : []));
  if (NON_DIFFERENTIABLE.has(node.opType)) return [];
  const rule = RULES[node.opType];
  const candidates = rule ? rule.inputs(node) : node.inputs.map((_, i) => i);
  return candidates.filter((i) => { const v = node.input(i); return v && v.name !== '' && maybeFloat(s, v); });
}

/** Float, or of a type inference could not tell (ops without rules): such values count as differentiable. */
const maybeFloat = (s: ShapeTable, v: Value): boolean => s.elem(v) === undefined || s.isFloat(v);

export interface GradientPlan {
  graph: Graph;
  shapes: ShapeTable;
  opset: number;
  loss: Value;
  params: Value[];
  /** Nodes on a parameter-to-loss path, in graph order. */
  path: Node[];
  /** Values that lead from a parameter (forward) and to the loss (backward). */
  active: Set<Value>;
  /** paddingIdx resolved: table -> row (non-negative where the row count is static). */
  paddingRows: Map<Value, number>;
}

/**
 * Finds the loss, the parameters and the nodes between them, and checks every such node has a
 * rule; throws UnsupportedGradientError listing all that do not, before anything is changed.
 * The graph is topologically sorted in place (its node order only).
 */
/** Refuses a model whose opset the rules do not emit for; the opset number of the model otherwise. */
export function checkTrainingOpset(model: Model): number {
  const opset = model.opsetVersion('') ?? 0;
  if (opset < MIN_TRAINING_OPSET) throw new TrainingOptionError(`The model imports ONNX opset ${opset}; training steps need opset ${MIN_TRAINING_OPSET} or newer. Convert the model to a newer opset first.`);
  return opset;
}

/** A single-element float initializer: an exporter's constant (eps, a scale, 1.0), not a weight. */
const isConstantLike = (v: Value): boolean => !!v.initializer && v.initializer.elementCount === 1;

export function planGradients(model: Model, lossName: string, options: GradientOptions = {}): GradientPlan {
  const opset = checkTrainingOpset(model);
  const graph = model.graph;
  topologicalSort(graph, { recursive: false });
  const shapes = inferShapes(graph, opset);
  const loss = graph.lookup(lossName);
  if (!loss) throw new TrainingOptionError(`The model has no value named "${lossName}" to use as the loss; its outputs are ${graph.outputs.map((o) => o.name).join(', ') || '(none)'}.`);
  if (!shapes.isFloat(loss)) throw new TrainingOptionError(`Loss "${lossName}" is ${shapes.elem(loss) === undefined ? 'of unknown element type' : dataTypeName(shapes.elem(loss)!)}, not a float tensor.`);
  const ld = shapes.dims(loss);
  if (ld && !ld.every((d) => d === 1)) throw new TrainingOptionError(`Loss "${lossName}" has shape [${ld.join(', ')}]; a training step needs a scalar loss (reduce it with ReduceMean or ReduceSum first).`);

  const byName = new Map<string, Value>();
  for (const v of graph.initializers) byName.set(v.name, v);
  for (const v of graph.inputs) if (!byName.has(v.name)) byName.set(v.name, v);
  let candidates: Value[];
  if (options.params) {
    candidates = options.params.map((name) => {
      const v = byName.get(name);
      if (!v) throw new TrainingOptionError(errorMessage`Parameter "${name}" (${optionName('params')}) is neither an initializer nor a graph input of the model.`);
      if (!shapes.isFloat(v)) throw new TrainingOptionError(errorMessage`Parameter "${name}" (${optionName('params')}) is ${shapes.elem(v) === undefined ? 'of unknown type' : dataTypeName(shapes.elem(v)!)}, not a float tensor.`);
      return v;
    });
  } else {
    candidates = graph.initializers.filter((v) => shapes.isFloat(v));
  }

  const nodes = graph.nodes;
  const diff = new Map<Node, number[]>(nodes.map((n) => [n, differentiableInputs(n, shapes)]));
  const forward = new Set<Value>(candidates);
  for (const n of nodes) {
    if (!diff.get(n)!.some((i) => forward.has(n.input(i)!))) continue;
    for (const o of n.outputs) if (o && maybeFloat(shapes, o)) forward.add(o);
  }
  const backward = new Set<Value>([loss]);
  for (let k = nodes.length - 1; k >= 0; k--) {
    const n = nodes[k]!;
    if (!n.outputs.some((o) => o && backward.has(o))) continue;
    for (const i of diff.get(n)!) backward.add(n.input(i)!);
  }
  const active = new Set([...forward].filter((v) => backward.has(v)));
  const params = options.params ? candidates : candidates.filter((v) => active.has(v) && !isConstantLike(v));
  if (options.params) {
    const cut = params.filter((p) => !active.has(p));
    if (cut.length) throw new TrainingOptionError(errorMessage`Parameter${cut.length > 1 ? 's' : ''} ${cut.map((p) => `"${p.name}"`).join(', ')} do${cut.length > 1 ? '' : 'es'} not reach loss "${lossName}" through differentiable ops; leave ${cut.length > 1 ? 'them' : 'it'} out of ${optionName('params')}.`);
  }
  if (!params.length) {
    const scalars = candidates.filter((v) => active.has(v));
    const hint = scalars.length ? errorMessage` other than single-element constants (${scalars.map((v) => v.name).join(', ')}; name them in ${optionName('params')} to train them)` : '';
    // Weights fed as graph inputs (training artifacts, exports with weights as inputs) are trained only when named.
    const reaching = graph.inputs.filter((v) => !v.initializer && shapes.isFloat(v) && backward.has(v));
    const inputHint = reaching.length
      ? errorMessage` Float graph inputs that reach it: ${reaching.map((v) => `"${v.name}"`).join(', ')}; if some are weights, name them in ${optionName('params')} to train them (with their values given as initial values), or store them as initializers.`
      : '';
    throw new TrainingOptionError(errorMessage`No float initializer reaches loss "${lossName}" through differentiable ops${hint}: nothing to train.${inputHint}`);
  }

  const path = nodes.filter((n) => n.outputs.some((o) => o && active.has(o)));
  const onPath = new Set(path);
  const missing: { op: string; node: string; why: string }[] = [];
  // Values whose unknown shape or type comes from a refused node upstream: a failure they cause downstream is a consequence, not listed.
  const tainted = new Set<Value>();
  for (const n of nodes) {
    let refused = false;
    if (onPath.has(n)) {
      const label = n.name ?? n.outputs[0]?.name ?? '';
      const rule = n.domain === '' || n.domain === 'ai.onnx' ? RULES[n.opType] : undefined;
      const need = n.inputs.map((v, i) => !!v && active.has(v) && diff.get(n)!.includes(i));
      const why = rule ? rule.check?.(n, shapes, need, opset) : 'no gradient rule';
      const consequence = !!rule && n.inputs.some((v) => v && tainted.has(v) && (shapes.rank(v) === undefined || shapes.elem(v) === undefined));
      if (why && !consequence) missing.push({ op: rule ? n.opType : `${n.domain ? n.domain + '::' : ''}${n.opType}`, node: label, why });
      if (n.opType === 'Pow' && n.input(1) && active.has(n.input(1)!)) missing.push({ op: 'Pow', node: label, why: 'the exponent depends on a parameter (only constant exponents have a rule)' });
      refused = !!why;
    }
    const fromTainted = n.inputs.some((v) => v && tainted.has(v));
    for (const o of n.outputs) if (o && (refused || fromTainted) && (shapes.rank(o) === undefined || shapes.elem(o) === undefined)) tainted.add(o);
  }
  if (missing.length) {
    const list = missing.map((m) => `${m.op} "${m.node}" (${m.why})`).join('; ');
    throw new UnsupportedGradientError(errorMessage`Cannot differentiate loss "${lossName}": ${missing.length} node${missing.length > 1 ? 's' : ''} on a parameter-to-loss path ha${missing.length > 1 ? 've' : 's'} no usable gradient rule: ${list}. Freeze the parameters behind them (leave them out of ${optionName('params')}) or rewrite those ops; nothing was built.`, missing);
  }
  const paddingRows = resolvePaddingIdx(model, options.paddingIdx, params, path, shapes);
  return { graph, shapes, opset, loss, params, path, active, paddingRows };
}

/** Checks paddingIdx names a trained table read by a Gather on the path, with a row inside it. */
function resolvePaddingIdx(model: Model, option: GradientOptions['paddingIdx'], params: Value[], path: Node[], shapes: ShapeTable): Map<Value, number> {
  const rows = new Map<Value, number>();
  if (option === undefined) return rows;
  let entries: [string, number][];
  if (typeof option === 'number') {
    const target = findEmbeddings(model).defaultTarget[0];
    if (!target) throw new TrainingOptionError(errorMessage`${optionName('paddingIdx')} ${option} is for the token-embedding table, but the model has none that can be told apart; give the table by name ({ "<table>": ${option} }).`);
    entries = [[target.table.name, option]];
  } else {
    entries = Object.entries(option);
  }
  for (const [name, row] of entries) {
    const table = params.find((p) => p.name === name);
    if (!table) throw new TrainingOptionError(errorMessage`${optionName('paddingIdx')} names "${name}", which is not a trained parameter of this step (parameters: ${params.map((p) => p.name).join(', ')}).`);
    if (!path.some((n) => n.opType === 'Gather' && n.input(0) === table && normalizeAxis(attrInt(n, 'axis', 0), shapes.rank(table) ?? 2) === 0)) throw new TrainingOptionError(errorMessage`${optionName('paddingIdx')} names "${name}", but no row lookup (Gather on axis 0) on the way to the loss reads it.`);
    const count = shapes.dims(table)?.[0];
    const bound = typeof count === 'number' ? count : Infinity;
    if (!Number.isInteger(row) || row >= bound || row < (typeof count === 'number' ? -count : 0)) throw new TrainingOptionError(errorMessage`${optionName('paddingIdx')} row ${row} for "${name}" is not a row of the table (${typeof count === 'number' ? `${count} rows` : 'rows unknown: use a non-negative row'}).`);
    rows.set(table, row < 0 ? row + bound : row);
  }
  return rows;
}

/**
 * Appends the backward pass of `plan` to its graph. Dropout nodes on the path get a mask output if
 * they have none (the rule needs it). Returns each parameter's gradient value.
 */
export function emitGradients(model: Model, plan: GradientPlan, names = new NameAllocator(model)): GradientResult {
  const { graph, shapes, opset, loss, params, path, active } = plan;
  const e = new Emitter(graph, names, opset, shapes);
  e.paddingRows = plan.paddingRows;
  for (const n of path) {
    if (n.opType === 'Dropout' && !n.outputs[1] && !isConstantFalse(shapes, n.input(2))) {
      const mask = new Value(names.fresh(`${n.outputs[0]!.name}_mask`));
      n.appendOutput(mask);
      shapes.set(mask, { elem: DataType.BOOL, dims: shapes.dims(n.input(0)) });
    }
  }
  const contributions = new Map<Value, Value[]>();
  const add = (v: Value, g: Value) => { const list = contributions.get(v); if (list) list.push(g); else contributions.set(v, [g]); };
  const total = (v: Value): Value | undefined => {
    const list = contributions.get(v);
    if (!list) return undefined;
    const s = e.sum(list);
    contributions.set(v, [s]);
    return s;
  };
  const lossElem = shapes.elem(loss)!;
  const ld = shapes.staticDims(loss);
  add(loss, ld
    ? e.constant(Tensor.fromArray(lossElem, ld, new Array(ld.reduce((p, q) => p * q, 1)).fill(1)), 'loss_seed')
    : e.op('ConstantOfShape', [e.op('Shape', [loss])], { value: attr.tensor(Tensor.fromArray(lossElem, [1], [1])) }, 'loss_seed'));

  for (let k = path.length - 1; k >= 0; k--) {
    const node = path[k]!;
    const g = node.outputs.map((o) => (o && active.has(o) ? total(o) : undefined));
    if (g.every((x) => x === undefined)) continue;
    const diffIn = differentiableInputs(node, shapes);
    const need = node.inputs.map((v, i) => !!v && active.has(v) && diffIn.includes(i));
    if (!need.some(Boolean)) continue;
    const grads = RULES[node.opType]!.grad({ node, g, need, e, s: shapes });
    grads.forEach((gi, i) => { if (gi && need[i]) add(node.input(i)!, gi); });
  }
  const gradients = new Map<Value, Value>();
  for (const p of params) {
    const gp = total(p);
    if (!gp) throw new OnnxModelError(`Internal: no gradient reached parameter ${p.name}`);
    gradients.set(p, gp);
  }
  return { loss, params, gradients, runtimeShapeFallbacks: e.runtimeFallbacks, addedNodes: e.added, gatherGradient: e.gatherForm };
}

/** Plans and emits in one go (see planGradients / emitGradients). Edits `model`. */
export function appendGradients(model: Model, lossName: string, options: GradientOptions = {}): GradientResult {
  return emitGradients(model, planGradients(model, lossName, options));
}

/** Makes parameter `p` a plain graph input (ORT-web refuses inputs that also have initializers). */
export function parameterToInput(graph: Graph, p: Value, shapes: ShapeTable): void {
  const info = shapes.info(p);
  if (graph.initializers.includes(p)) graph.initializerToInput(p);
  else if (!graph.inputs.includes(p)) graph.addInput(p);
  p.info = { name: p.name, type: tensorType(info.elem ?? DataType.FLOAT, info.dims) };
}
