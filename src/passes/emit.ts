/**
 * Emits small ONNX computations in the op forms valid at a given opset (Slice, ReduceSum and
 * Unsqueeze moved attributes to inputs at opsets 10 and 13). Every node and value gets a name
 * from one allocator with a reserved prefix, and nodes are inserted in order after an anchor.
 */
import { DataType } from '../graph/dtype.js';
import { Graph, Node, Value } from '../graph/ir.js';
import { attr, makeAttribute, type AttributeInput } from '../graph/builder.js';
import type { NameAllocator } from '../graph/names.js';
import { Tensor } from '../graph/tensor.js';

const INT64_MAX = 9223372036854775807n;

export class Emitter {
  readonly added: Node[] = [];
  private cursor: Node;

  constructor(
    private readonly graph: Graph,
    anchor: Node,
    private readonly names: NameAllocator,
    private readonly prefix: string,
    readonly opset: number,
  ) {
    this.cursor = anchor;
  }

  /** Adds a node after the previous one; returns its single output (or `output` when given). */
  op(opType: string, inputs: (Value | null)[], attributes: Record<string, AttributeInput> = {}, role = opType, output?: Value): Value {
    const out = output ?? new Value(this.names.fresh(`${this.prefix}${role}_output`));
    const node = new Node(opType, inputs, [out], {
      name: this.names.fresh(`${this.prefix}${role}`),
      attributes: Object.entries(attributes).map(([k, v]) => makeAttribute(k, v)),
    });
    this.graph.insertAfter(this.cursor, node);
    this.cursor = node;
    this.added.push(node);
    return out;
  }

  constant(tensor: Tensor, role: string): Value {
    return this.op('Constant', [], { value: attr.tensor(tensor) }, role);
  }
  int64s(values: readonly (number | bigint)[], role: string): Value {
    return this.constant(Tensor.fromArray(DataType.INT64, [values.length], BigInt64Array.from(values, (v) => BigInt(v))), role);
  }
  scalarFloat(value: number, role: string): Value {
    return this.constant(Tensor.fromArray(DataType.FLOAT, [], [value]), role);
  }
  scalarInt64(value: number, role: string): Value {
    return this.constant(Tensor.fromArray(DataType.INT64, [], BigInt64Array.from([BigInt(value)])), role);
  }

  cast(x: Value, to: DataType, role = 'cast'): Value { return this.op('Cast', [x], { to: attr.int(to) }, role); }

  /** x[starts:ends] along axis 0 of a 1-D tensor (ends may be "to the end"). */
  sliceTail(x: Value, start: number, role: string): Value {
    if (this.opset < 10) {
      return this.op('Slice', [x], { starts: attr.ints([start]), ends: attr.ints([INT64_MAX]), axes: attr.ints([0]) }, role);
    }
    return this.op('Slice', [x, this.int64s([start], `${role}_start`), this.int64s([INT64_MAX], `${role}_end`), this.int64s([0], `${role}_axes`)], {}, role);
  }

  reduceSum(x: Value, axes: number[], keepdims: boolean, role: string): Value {
    if (this.opset < 13) return this.op('ReduceSum', [x], { axes: attr.ints(axes), keepdims: attr.int(keepdims ? 1 : 0) }, role);
    return this.op('ReduceSum', [x, this.int64s(axes, `${role}_axes`)], { keepdims: attr.int(keepdims ? 1 : 0) }, role);
  }

  /** Product of all elements (no axes: every opset reduces everything). */
  reduceProd(x: Value, role: string): Value {
    return this.op('ReduceProd', [x], { keepdims: attr.int(0) }, role);
  }

  unsqueeze(x: Value, axes: number[], role: string): Value {
    if (this.opset < 13) return this.op('Unsqueeze', [x], { axes: attr.ints(axes) }, role);
    return this.op('Unsqueeze', [x, this.int64s(axes, `${role}_axes`)], {}, role);
  }
}
