/**
 * The graph library as published (`onnx-neftune/graph`): what a graph-tool author needs. Wire-level
 * helpers (varints, payload placeholders and streaming pieces, protobufjs reflection roots) stay in
 * their own modules for this package's I/O layer.
 */
export { OnnxNeftuneError, OnnxDecodeError, OnnxModelError, GraphEditError, errorMessage, optionName, type ErrorCode, type ErrorMessage, type OptionMention } from './errors.js';
export {
  DataType, dataTypeBits, dataTypeName, isFloatingType, isIntegerType, parseDataType,
  float32ToFloat16Bits, float16BitsToFloat32, float32ToBfloat16Bits, bfloat16BitsToFloat32,
} from './dtype.js';
export { Tensor, type ExternalDataRef, type TensorStorage, type TensorData } from './tensor.js';
export {
  Model, Graph, Node, Value, Attribute, AttributeType, OnnxFunction, TrainingInfo, Metadata,
  type AttributeKind, type Use, type Dim, type ValueList, type GraphScope, type NodeFilter,
} from './ir.js';
export { decodeModel, encodeModel, encodeModelChunks, encodeModelTo, decodeModelProto, encodeModelProto } from './codec.js';
export { modelFromProto, modelToProto } from './serde.js';
export {
  int64ToNumber,
  type Int64, type LongLike, type ModelProto, type GraphProto, type NodeProto, type AttributeProto, type TensorProto,
  type SparseTensorProto, type ValueInfoProto, type TypeProto, type TensorShapeProto, type TensorShapeDimensionProto,
  type OperatorSetIdProto, type StringStringEntryProto, type TrainingInfoProto, type FunctionProto, type TensorAnnotationProto,
} from './proto.js';
export {
  attr, makeAttribute, tensorType, GraphBuilder, ModelBuilder,
  type TypedAttribute, type AttributeInput, type NodeOptions, type ModelOptions,
} from './builder.js';
export { topologicalSort, isTopologicallySorted } from './toposort.js';
export { NameAllocator, NameSet } from './names.js';
export { externalizeInitializers, type ExternalizeOptions } from './external.js';
export { extractSlice, type SliceOptions } from './slice.js';
