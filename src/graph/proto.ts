/**
 * The ONNX protobuf messages as plain objects, decoded and encoded with protobufjs.
 * Field names follow onnx.proto (snake_case). Absent optional fields are absent properties,
 * which is what lets a decode/encode round trip reproduce the input bytes.
 */
import protobuf from 'protobufjs/light.js';
import { OnnxDecodeError } from './errors.js';
import { onnxSchemaJson } from './schema.generated.js';
import { onnxCodecs } from './codecs.generated.js';

/** protobufjs hands int64 fields over as long.js values (or numbers when long.js is missing). */
export interface LongLike {
  low: number;
  high: number;
  unsigned: boolean;
  toNumber(): number;
  toString(): string;
}
export type Int64 = number | LongLike;

interface HasUnknowns {
  /** Fields this schema does not know, kept as raw wire bytes (a newer ONNX's fields). */
  $unknowns?: Uint8Array[];
}

export interface StringStringEntryProto extends HasUnknowns { key?: string; value?: string }
export interface OperatorSetIdProto extends HasUnknowns { domain?: string; version?: Int64 }

export interface TensorShapeDimensionProto extends HasUnknowns {
  dim_value?: Int64;
  dim_param?: string;
  denotation?: string;
}
export interface TensorShapeProto extends HasUnknowns { dim?: TensorShapeDimensionProto[] }

export interface TypeProto extends HasUnknowns {
  tensor_type?: { elem_type?: number; shape?: TensorShapeProto } & HasUnknowns;
  sequence_type?: { elem_type?: TypeProto } & HasUnknowns;
  map_type?: { key_type?: number; value_type?: TypeProto } & HasUnknowns;
  optional_type?: { elem_type?: TypeProto } & HasUnknowns;
  sparse_tensor_type?: { elem_type?: number; shape?: TensorShapeProto } & HasUnknowns;
  opaque_type?: { domain?: string; name?: string } & HasUnknowns;
  denotation?: string;
}

export interface TensorProto extends HasUnknowns {
  dims?: Int64[];
  data_type?: number;
  segment?: { begin?: Int64; end?: Int64 } & HasUnknowns;
  float_data?: number[];
  int32_data?: number[];
  string_data?: Uint8Array[];
  int64_data?: Int64[];
  name?: string;
  doc_string?: string;
  raw_data?: Uint8Array;
  external_data?: StringStringEntryProto[];
  data_location?: number;
  double_data?: number[];
  uint64_data?: Int64[];
  metadata_props?: StringStringEntryProto[];
}

export interface SparseTensorProto extends HasUnknowns {
  values?: TensorProto;
  indices?: TensorProto;
  dims?: Int64[];
}

export interface AttributeProto extends HasUnknowns {
  name?: string;
  ref_attr_name?: string;
  doc_string?: string;
  type?: number;
  f?: number;
  i?: Int64;
  s?: Uint8Array;
  t?: TensorProto;
  g?: GraphProto;
  sparse_tensor?: SparseTensorProto;
  tp?: TypeProto;
  floats?: number[];
  ints?: Int64[];
  strings?: Uint8Array[];
  tensors?: TensorProto[];
  graphs?: GraphProto[];
  sparse_tensors?: SparseTensorProto[];
  type_protos?: TypeProto[];
}

export interface ValueInfoProto extends HasUnknowns {
  name?: string;
  type?: TypeProto;
  doc_string?: string;
  metadata_props?: StringStringEntryProto[];
}

export interface NodeProto extends HasUnknowns {
  input?: string[];
  output?: string[];
  name?: string;
  op_type?: string;
  domain?: string;
  overload?: string;
  attribute?: AttributeProto[];
  doc_string?: string;
  metadata_props?: StringStringEntryProto[];
  device_configurations?: unknown[];
}

export interface TensorAnnotationProto extends HasUnknowns {
  tensor_name?: string;
  quant_parameter_tensor_names?: StringStringEntryProto[];
}

export interface GraphProto extends HasUnknowns {
  node?: NodeProto[];
  name?: string;
  initializer?: TensorProto[];
  sparse_initializer?: SparseTensorProto[];
  doc_string?: string;
  input?: ValueInfoProto[];
  output?: ValueInfoProto[];
  value_info?: ValueInfoProto[];
  quantization_annotation?: TensorAnnotationProto[];
  metadata_props?: StringStringEntryProto[];
}

export interface TrainingInfoProto extends HasUnknowns {
  initialization?: GraphProto;
  algorithm?: GraphProto;
  initialization_binding?: StringStringEntryProto[];
  update_binding?: StringStringEntryProto[];
}

export interface FunctionProto extends HasUnknowns {
  name?: string;
  input?: string[];
  output?: string[];
  attribute?: string[];
  attribute_proto?: AttributeProto[];
  node?: NodeProto[];
  doc_string?: string;
  opset_import?: OperatorSetIdProto[];
  domain?: string;
  overload?: string;
  value_info?: ValueInfoProto[];
  metadata_props?: StringStringEntryProto[];
}

export interface ModelProto extends HasUnknowns {
  ir_version?: Int64;
  opset_import?: OperatorSetIdProto[];
  producer_name?: string;
  producer_version?: string;
  domain?: string;
  model_version?: Int64;
  doc_string?: string;
  graph?: GraphProto;
  metadata_props?: StringStringEntryProto[];
  training_info?: TrainingInfoProto[];
  functions?: FunctionProto[];
  configuration?: unknown[];
}

/** The reflection root built from proto/onnx.proto (see scripts/gen-schema.mjs). */
export const onnxRoot: protobuf.Root = protobuf.Root.fromJSON(onnxSchemaJson as protobuf.INamespace);
useGeneratedCodecs(onnxRoot);
export const ModelProtoType: protobuf.Type = onnxRoot.lookupType('onnx.ModelProto');
/**
 * protobufjs decode that keeps fields the schema does not know (`$unknowns`). Whatever protobufjs
 * refuses becomes an OnnxDecodeError at `path`; `offset` is where `bytes` start in the input.
 */
export function decodeKeepingUnknowns<T>(type: protobuf.Type, bytes: Uint8Array, path: string = type.name, offset = 0): T {
  const reader = protobuf.Reader.create(bytes);
  reader.discardUnknown = false;
  try {
    return type.decode(reader) as unknown as T;
  } catch (error) {
    throw new OnnxDecodeError(protobufReason(error), path, offset + reader.pos);
  }
}

/** The reason protobufjs gave, for a decode error message (its errors are plain Errors). */
export function protobufReason(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
export const GraphProtoType: protobuf.Type = onnxRoot.lookupType('onnx.GraphProto');
export const NodeProtoType: protobuf.Type = onnxRoot.lookupType('onnx.NodeProto');
export const AttributeProtoType: protobuf.Type = onnxRoot.lookupType('onnx.AttributeProto');

export const int64ToNumber = (v: Int64 | undefined): number =>
  v === undefined ? 0 : typeof v === 'number' ? v : v.toNumber();

/** Copies the own properties of a decoded message, including the hidden unknown-field list. */
export function cloneShallow<T extends HasUnknowns>(proto: T): T {
  const copy = { ...proto };
  if (proto.$unknowns) copy.$unknowns = proto.$unknowns;
  return copy;
}

/** Whether `x` is a decoded protobufjs message (its class's prototype holds the field defaults). */
export function isMessage(x: object): boolean { return x instanceof protobuf.Message; }

/**
 * Gives each message type the encoder and decoder protobufjs would generate and compile on its
 * first use (Type#setup), taken from the build (scripts/gen-schema.mjs): the same code, without
 * building source text and compiling it in every process, and only for the types a run uses.
 * Type#setup, should anything call verify/fromObject/toObject, makes the same functions again.
 */
function useGeneratedCodecs(root: protobuf.Root): void {
  for (const [name, codec] of Object.entries(onnxCodecs)) {
    const type = root.lookupType(name);
    const install = () => {
      // What Type#setup hands its generated functions: the field types in field order, the constructor.
      const types = type.fieldsArray.map((field) => field.resolve().resolvedType);
      type.encode = codec.encode(protobuf.Writer, types, protobuf.util) as typeof type.encode;
      type.decode = codec.decode(protobuf.Reader, types, protobuf.util, type.ctor) as typeof type.decode;
    };
    type.encode = (...args: Parameters<typeof type.encode>) => { install(); return type.encode(...args); };
    type.decode = (...args: Parameters<typeof type.decode>) => { install(); return type.decode(...args); };
  }
}
