/** ONNX element types (TensorProto.DataType) and what the library knows about each. */
import { GraphEditError } from './errors.js';
export enum DataType {
  UNDEFINED = 0, FLOAT = 1, UINT8 = 2, INT8 = 3, UINT16 = 4, INT16 = 5, INT32 = 6, INT64 = 7,
  STRING = 8, BOOL = 9, FLOAT16 = 10, DOUBLE = 11, UINT32 = 12, UINT64 = 13, COMPLEX64 = 14,
  COMPLEX128 = 15, BFLOAT16 = 16, FLOAT8E4M3FN = 17, FLOAT8E4M3FNUZ = 18, FLOAT8E5M2 = 19,
  FLOAT8E5M2FNUZ = 20, UINT4 = 21, INT4 = 22, FLOAT4E2M1 = 23, FLOAT8E8M0 = 24, UINT2 = 25, INT2 = 26,
}

/** Bits per element, 0 where the size is not fixed (STRING, UNDEFINED) or unknown (a newer type). */
const BITS: Record<number, number> = {
  [DataType.FLOAT]: 32, [DataType.UINT8]: 8, [DataType.INT8]: 8, [DataType.UINT16]: 16,
  [DataType.INT16]: 16, [DataType.INT32]: 32, [DataType.INT64]: 64, [DataType.BOOL]: 8,
  [DataType.FLOAT16]: 16, [DataType.DOUBLE]: 64, [DataType.UINT32]: 32, [DataType.UINT64]: 64,
  [DataType.COMPLEX64]: 64, [DataType.COMPLEX128]: 128, [DataType.BFLOAT16]: 16,
  [DataType.FLOAT8E4M3FN]: 8, [DataType.FLOAT8E4M3FNUZ]: 8, [DataType.FLOAT8E5M2]: 8,
  [DataType.FLOAT8E5M2FNUZ]: 8, [DataType.UINT4]: 4, [DataType.INT4]: 4, [DataType.FLOAT4E2M1]: 4,
  [DataType.FLOAT8E8M0]: 8, [DataType.UINT2]: 2, [DataType.INT2]: 2,
};

export const dataTypeBits = (type: number): number => BITS[type] ?? 0;

export const dataTypeName = (type: number): string => DataType[type] ?? `DataType(${type})`;

export const isFloatingType = (type: number): boolean =>
  type === DataType.FLOAT || type === DataType.FLOAT16 || type === DataType.BFLOAT16 ||
  type === DataType.DOUBLE;

export const isIntegerType = (type: number): boolean =>
  type === DataType.INT64 || type === DataType.INT32 || type === DataType.INT16 || type === DataType.INT8 ||
  type === DataType.UINT64 || type === DataType.UINT32 || type === DataType.UINT16 || type === DataType.UINT8;

/** Accepts an enum value or a name such as `float16` / `FLOAT16`. */
/** NumPy's names for the two ONNX types named otherwise. */
const NUMPY_NAMES: Readonly<Record<string, string>> = { FLOAT32: 'FLOAT', FLOAT64: 'DOUBLE' };

export function parseDataType(type: DataType | string): DataType {
  if (typeof type === 'number') return type;
  // Own names only: the enum object also maps numbers back to names, and has a prototype.
  const upper = typeof type === 'string' ? type.toUpperCase() : '';
  const key = Object.hasOwn(NUMPY_NAMES, upper) ? NUMPY_NAMES[upper]! : upper;
  const found = Object.hasOwn(DataType, key) ? (DataType as unknown as Record<string, unknown>)[key] : undefined;
  if (typeof found !== 'number') {
    const known = Object.keys(DataType).filter((k) => Number.isNaN(Number(k)) && k !== 'UNDEFINED').map((k) => k.toLowerCase());
    throw new GraphEditError(`Unknown ONNX data type ${JSON.stringify(type)}: use one of ${known.join(', ')} (any case), float32 or float64`);
  }
  return found;
}

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/** IEEE binary16 bits of `value`, rounded to nearest even. */
export function float32ToFloat16Bits(value: number): number {
  f32[0] = value;
  const x = u32[0]!;
  const sign = (x >>> 16) & 0x8000;
  const exp = (x >>> 23) & 0xff;
  let mant = x & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 : 0);
  let e = exp - 127 + 15;
  if (e >= 0x1f) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign;
    mant |= 0x800000;
    const shift = 14 - e;
    const half = 1 << (shift - 1);
    let r = mant >>> shift;
    const rest = mant & ((1 << shift) - 1);
    if (rest > half || (rest === half && (r & 1))) r++;
    return sign | r;
  }
  let r = mant >>> 13;
  const rest = mant & 0x1fff;
  if (rest > 0x1000 || (rest === 0x1000 && (r & 1))) {
    r++;
    if (r === 0x400) { r = 0; e++; if (e >= 0x1f) return sign | 0x7c00; }
  }
  return sign | (e << 10) | r;
}

export function float16BitsToFloat32(bits: number): number {
  const sign = bits & 0x8000 ? -1 : 1;
  const exp = (bits >>> 10) & 0x1f;
  const mant = bits & 0x3ff;
  if (exp === 0) return sign * mant * 2 ** -24;
  if (exp === 0x1f) return mant ? NaN : sign * Infinity;
  return sign * (1 + mant / 1024) * 2 ** (exp - 15);
}

/** bfloat16 bits of `value`, rounded to nearest even. */
export function float32ToBfloat16Bits(value: number): number {
  f32[0] = value;
  const x = u32[0]!;
  if ((x & 0x7fffffff) > 0x7f800000) return (x >>> 16) | 0x40;
  return ((x + 0x7fff + ((x >>> 16) & 1)) >>> 16) & 0xffff;
}

export function bfloat16BitsToFloat32(bits: number): number {
  u32[0] = bits << 16;
  return f32[0]!;
}
