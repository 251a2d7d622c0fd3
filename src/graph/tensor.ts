import { DataType, dataTypeBits, dataTypeName, float32ToBfloat16Bits, float32ToFloat16Bits, parseDataType } from './dtype.js';
import { OnnxModelError } from './errors.js';
import { int64ToNumber, type TensorProto } from './proto.js';
import { deferredPayloadOf } from './deferred.js';

/** Where a tensor's payload lives. `external` payloads are read by the I/O layer, never here. */
export interface ExternalDataRef {
  location: string;
  offset: number;
  /** Undefined when the file does not say (the payload runs to the end of the data file). */
  length: number | undefined;
  checksum: string | undefined;
  /** Every key as written, including ones the ONNX spec does not define. */
  entries: ReadonlyArray<{ key: string; value: string }>;
}

export type TensorStorage = 'raw' | 'typed' | 'external' | 'empty';

export type TensorData =
  | Float32Array | Float64Array | Int8Array | Uint8Array | Int16Array | Uint16Array
  | Int32Array | Uint32Array | BigInt64Array | BigUint64Array;

const isLittleEndian = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

/**
 * A tensor as it is stored. The TensorProto is kept as decoded: payload bytes stay a view on the
 * loaded buffer (or an external-data reference) until someone asks for them, and encoding writes
 * them back from where they are.
 */
export class Tensor {
  constructor(public proto: TensorProto) {}

  get name(): string | undefined { return this.proto.name; }
  get dataType(): DataType { return this.proto.data_type ?? DataType.UNDEFINED; }
  get dims(): number[] { return (this.proto.dims ?? []).map(int64ToNumber); }
  get elementCount(): number { return this.dims.reduce((a, b) => a * b, 1); }
  /** Payload size implied by dtype and shape (packed 4-/2-bit types round up to whole bytes). */
  get byteLength(): number {
    const bits = dataTypeBits(this.dataType);
    return Math.ceil((this.elementCount * bits) / 8);
  }

  get storage(): TensorStorage {
    const p = this.proto;
    if (p.data_location === 1) return 'external';
    if (p.raw_data !== undefined && Object.hasOwn(p, 'raw_data')) return 'raw';
    const typed = p.float_data?.length || p.int32_data?.length || p.int64_data?.length ||
      p.double_data?.length || p.uint64_data?.length || p.string_data?.length;
    return typed ? 'typed' : 'empty';
  }

  get external(): ExternalDataRef | undefined {
    if (this.proto.data_location !== 1) return undefined;
    const entries = (this.proto.external_data ?? []).map((e) => ({ key: e.key ?? '', value: e.value ?? '' }));
    const get = (k: string) => entries.find((e) => e.key === k)?.value;
    const num = (k: string) => {
      const v = get(k);
      if (v === undefined) return undefined;
      if (!/^\d+$/.test(v)) {
        throw new OnnxModelError(`Tensor "${this.name}": external_data ${k} is "${v}", not a non-negative integer`);
      }
      return Number(v);
    };
    return { location: get('location') ?? '', offset: num('offset') ?? 0, length: num('length'), checksum: get('checksum'), entries };
  }

  /**
   * The payload as little-endian bytes. Raw payloads are returned as views (no copy); typed fields
   * are converted. External payloads are not reachable from here: read them through the I/O layer.
   */
  rawBytes(): Uint8Array {
    const p = this.proto;
    switch (this.storage) {
      case 'raw': return deferredPayloadOf(p.raw_data)?.read() ?? p.raw_data!;
      case 'empty': return new Uint8Array(0);
      case 'external':
        throw new OnnxModelError(`Tensor "${this.name}" keeps its data in external file "${this.external?.location}"; load it with the Node file API (readModelFile) first`);
      case 'typed': return typedFieldsToBytes(p, this.dataType);
    }
  }

  /** The payload as a typed array of the element type where JS has one (float16/bfloat16: raw Uint16 bits). */
  toArray(): TensorData {
    const bytes = this.rawBytes();
    // An owned, aligned copy: a Node buffer's slice() is a view, so copy through Uint8Array's own slice.
    const copy = Uint8Array.prototype.slice.call(bytes);
    const b = copy.buffer;
    switch (this.dataType) {
      case DataType.FLOAT: return new Float32Array(b);
      case DataType.DOUBLE: return new Float64Array(b);
      case DataType.INT8: return new Int8Array(b);
      case DataType.UINT8: case DataType.BOOL: return new Uint8Array(b);
      case DataType.INT16: return new Int16Array(b);
      case DataType.UINT16: case DataType.FLOAT16: case DataType.BFLOAT16: return new Uint16Array(b);
      case DataType.INT32: return new Int32Array(b);
      case DataType.UINT32: return new Uint32Array(b);
      case DataType.INT64: return new BigInt64Array(b);
      case DataType.UINT64: return new BigUint64Array(b);
      default: return copy;
    }
  }

  /**
   * A tensor from a typed array. Floats given as Float32Array are converted when `dataType` is
   * float16 or bfloat16; otherwise the array's bytes are taken as they are.
   */
  static fromArray(dataType: DataType | string, dims: readonly number[], data: TensorData | readonly number[], name?: string): Tensor {
    const type = parseDataType(dataType);
    const bytes = toLittleEndianBytes(type, data);
    const tensor = new Tensor({ dims: [...dims], data_type: type, raw_data: bytes });
    if (name !== undefined) tensor.proto.name = name;
    const expected = tensor.byteLength;
    if (dataTypeBits(type) && bytes.length !== expected) {
      throw new TypeError(`Tensor ${name ?? ''}: ${dataTypeName(type)} [${dims.join(', ')}] needs ${expected} bytes, got ${bytes.length}`);
    }
    return tensor;
  }

  /** A reference to bytes in an external data file (nothing is read). */
  static external(dataType: DataType | string, dims: readonly number[], ref: { location: string; offset: number; length: number }, name?: string): Tensor {
    const proto: TensorProto = {
      dims: [...dims], data_type: parseDataType(dataType),
      external_data: [
        { key: 'location', value: ref.location },
        { key: 'offset', value: String(ref.offset) },
        { key: 'length', value: String(ref.length) },
      ],
      data_location: 1,
    };
    if (name !== undefined) proto.name = name;
    return new Tensor(proto);
  }
}

function toLittleEndianBytes(type: DataType, data: TensorData | readonly number[]): Uint8Array {
  if (!isLittleEndian) throw new Error('big-endian hosts are not supported');
  const wantsHalf = type === DataType.FLOAT16 || type === DataType.BFLOAT16;
  if (Array.isArray(data) || (wantsHalf && (data instanceof Float32Array || data instanceof Float64Array))) {
    const values = data as ArrayLike<number>;
    let typed: TensorData;
    switch (type) {
      case DataType.FLOAT: typed = Float32Array.from(values); break;
      case DataType.DOUBLE: typed = Float64Array.from(values); break;
      case DataType.FLOAT16: typed = Uint16Array.from(values, float32ToFloat16Bits); break;
      case DataType.BFLOAT16: typed = Uint16Array.from(values, float32ToBfloat16Bits); break;
      case DataType.INT64: typed = BigInt64Array.from(values, (v) => BigInt(v)); break;
      case DataType.UINT64: typed = BigUint64Array.from(values, (v) => BigInt(v)); break;
      case DataType.INT32: typed = Int32Array.from(values); break;
      case DataType.UINT32: typed = Uint32Array.from(values); break;
      case DataType.INT16: typed = Int16Array.from(values); break;
      case DataType.UINT16: typed = Uint16Array.from(values); break;
      case DataType.INT8: typed = Int8Array.from(values); break;
      case DataType.UINT8: case DataType.BOOL: typed = Uint8Array.from(values); break;
      default: throw new TypeError(`Cannot build a ${dataTypeName(type)} tensor from plain numbers; pass its packed bytes as a Uint8Array`);
    }
    data = typed;
  }
  const view = data as TensorData;
  return new Uint8Array(view.buffer.slice(view.byteOffset, view.byteOffset + view.byteLength));
}

function typedFieldsToBytes(p: TensorProto, type: DataType): Uint8Array {
  if (p.float_data?.length) return new Uint8Array(Float32Array.from(p.float_data).buffer);
  if (p.double_data?.length) return new Uint8Array(Float64Array.from(p.double_data).buffer);
  if (p.int64_data?.length) return new Uint8Array(BigInt64Array.from(p.int64_data, (v) => BigInt(v.toString())).buffer);
  if (p.uint64_data?.length) {
    const wide = BigUint64Array.from(p.uint64_data, (v) => BigInt.asUintN(64, BigInt(v.toString())));
    if (type === DataType.UINT32) return new Uint8Array(Uint32Array.from(wide, (v) => Number(v)).buffer);
    return new Uint8Array(wide.buffer);
  }
  if (p.int32_data?.length) {
    const bits = dataTypeBits(type);
    const src = p.int32_data;
    if (bits === 32) return new Uint8Array(Int32Array.from(src).buffer);
    if (bits === 16) return new Uint8Array(Uint16Array.from(src, (v) => v & 0xffff).buffer);
    return Uint8Array.from(src, (v) => v & 0xff); // 8-bit types, and 4/2-bit types packed per byte
  }
  throw new OnnxModelError(`Tensor "${p.name}": ${dataTypeName(type)} values stored as strings have no byte form`);
}
