/** Bytes <-> ModelProto <-> IR. Pure functions on Uint8Array: no file system, no runtime. */
import protobuf from 'protobufjs/light.js';
import { OnnxDecodeError } from './errors.js';
import type { Model } from './ir.js';
import { ModelProtoType, type ModelProto } from './proto.js';
import { modelFromProto, modelToProto } from './serde.js';
import { checkWireStructure } from './wire.js';
import { encodeProtoPieces, joinPieces, type EncodedPiece } from './deferred.js';

/**
 * Decodes ModelProto bytes, keeping fields this schema does not know. Structure is checked first,
 * so bad input fails with OnnxDecodeError (path and byte offset), never with a crash or a huge
 * allocation.
 */
export function decodeModelProto(bytes: Uint8Array): ModelProto {
  if (!(bytes instanceof Uint8Array)) throw new TypeError('decodeModelProto expects a Uint8Array');
  if (bytes.length === 0) throw new OnnxDecodeError('the input is empty', 'ModelProto', 0);
  checkWireStructure(bytes, ModelProtoType);
  const reader = protobuf.Reader.create(bytes);
  reader.discardUnknown = false;
  let proto: ModelProto;
  try {
    proto = ModelProtoType.decode(reader) as unknown as ModelProto;
  } catch (error) {
    throw new OnnxDecodeError((error as Error).message, 'ModelProto', reader.pos);
  }
  if (!Object.hasOwn(proto, 'ir_version') && !Object.hasOwn(proto, 'graph')) {
    throw new OnnxDecodeError('neither ir_version nor graph is present', 'ModelProto', undefined);
  }
  return proto;
}

export function encodeModelProto(proto: ModelProto): Uint8Array {
  const bytes = ModelProtoType.encode(proto as unknown as protobuf.Message).finish();
  // In Node protobufjs returns Node's buffer subclass, whose slice() shares memory; hand out a plain view.
  return bytes.constructor === Uint8Array ? bytes : new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

/** Decodes an ONNX model into the graph IR. */
export function decodeModel(bytes: Uint8Array): Model {
  return modelFromProto(decodeModelProto(bytes));
}

/** Encodes the IR. An unedited model encodes to the bytes it was decoded from. Deferred payloads are read. */
export function encodeModel(model: Model): Uint8Array {
  const { pieces, length } = encodeModelPieces(model);
  const bytes = joinPieces(pieces, length);
  return bytes.constructor === Uint8Array ? bytes : new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

/**
 * Encodes the IR as byte pieces and deferred payload references, for writers that stream large
 * payloads from where they are instead of holding them.
 */
export function encodeModelPieces(model: Model): { pieces: EncodedPiece[]; length: number } {
  return encodeProtoPieces(modelToProto(model));
}
