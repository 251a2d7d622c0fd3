/** Bytes <-> ModelProto <-> IR. Pure functions on Uint8Array: no file system, no runtime. */
import protobuf from 'protobufjs/light.js';
import { OnnxDecodeError, OnnxModelError, OnnxNeftuneError } from './errors.js';
import type { Graph, Model } from './ir.js';
import { GraphProtoType, ModelProtoType, cloneShallow, decodeKeepingUnknowns, type GraphProto, type ModelProto, type TensorProto } from './proto.js';
import { modelFromProto, modelToProto, nodeToProto, type NodeBytes } from './serde.js';
import { unchangedFromBytes } from './node-bytes.js';
import { checkWireStructure } from './wire.js';
import { entryStartOf, readNodeStore } from './node-store.js';
import { coalesce, encodeProtoPieces, fieldsAsPieces, joinPieces, withLentPayloads, type EncodedPiece } from './deferred.js';
import { encodeVarint, skipValue, varintAt } from './varint.js';

/**
 * Decodes ModelProto bytes, keeping fields this schema does not know. Structure is checked first,
 * so bad input fails with OnnxDecodeError (path and byte offset), never with a crash or a huge
 * allocation.
 */
export function decodeModelProto(bytes: Uint8Array): ModelProto {
  checkModelBytes(bytes);
  return checkedModel(decodeChecked(ModelProtoType, bytes, 0, bytes.length) as ModelProto);
}

function checkModelBytes(bytes: Uint8Array, options: { skipMainGraphNodes?: boolean } = {}): void {
  if (!(bytes instanceof Uint8Array)) throw new TypeError('decodeModelProto expects a Uint8Array');
  if (bytes.length === 0) throw new OnnxDecodeError('the input is empty', 'ModelProto', 0);
  checkWireStructure(bytes, ModelProtoType, options);
}

function checkedModel(proto: ModelProto): ModelProto {
  if (!Object.hasOwn(proto, 'ir_version') && !Object.hasOwn(proto, 'graph')) {
    throw new OnnxDecodeError('neither ir_version nor graph is present', 'ModelProto', undefined);
  }
  return proto;
}

function decodeChecked(type: protobuf.Type, bytes: Uint8Array, start: number, end: number): Record<string, unknown> {
  return decodeKeepingUnknowns<Record<string, unknown>>(type, bytes.subarray(start, end), type.name, start);
}

/**
 * The ModelProto with its main graph's node list left as byte ranges (read into the IR by
 * node-bytes.ts); every other field is decoded by protobufjs. Undefined when the graph field
 * appears more than once (protobuf would merge them; the plain decoder handles that).
 */
function decodeModelShell(bytes: Uint8Array): { proto: ModelProto; nodes: NodeBytes } | undefined {
  const ranges: number[] = [];
  let graphs = 0;
  const proto = decodeExcept(ModelProtoType, bytes, 0, bytes.length, 7, (from, to, model) => {
    graphs++;
    model['graph'] = decodeExcept(GraphProtoType, bytes, from, to, 1, (s, e) => { ranges.push(s, e); }) as GraphProto;
  });
  if (graphs > 1) return undefined;
  return { proto: checkedModel(proto as ModelProto), nodes: { bytes, ranges } };
}

/**
 * Decodes the fields of one message in bytes[start, end) with protobufjs, except field
 * `special` (length-delimited), whose bodies go to `onSpecial` in order. The runs of other fields
 * are decoded one run at a time and merged: repeated fields append, scalars take the last value
 * (as protobuf merges; ModelProto and GraphProto have no singular message field besides the graph).
 */
function decodeExcept(type: protobuf.Type, bytes: Uint8Array, start: number, end: number, special: number,
  onSpecial: (from: number, to: number, result: Record<string, unknown>) => void): Record<string, unknown> {
  let target: Record<string, unknown> | undefined;
  const specials: number[] = [];
  let runStart = start;
  const flush = (runEnd: number) => {
    if (runEnd > runStart) target = mergeInto(target, decodeChecked(type, bytes, runStart, runEnd));
  };
  const specialTag = special * 8 + 2;
  for (let pos = start; pos < end;) {
    const fieldStart = pos;
    // One-byte tags and length prefixes (a graph's node entries are nearly all such) are read inline: no tuple per field.
    let tag = bytes[pos]!, after = pos + 1;
    if (tag >= 0x80) [tag, after] = varintAt(bytes, pos);
    if (tag % 8 !== 2) { pos = skipValue(bytes, tag % 8, after); continue; }
    let length = bytes[after]!, body = after + 1;
    if (length >= 0x80) [length, body] = varintAt(bytes, after);
    pos = body + length;
    if (tag === specialTag) {
      flush(fieldStart);
      specials.push(body, pos);
      runStart = pos;
    }
  }
  flush(end);
  // Special fields are handed over after the rest, so the handler may set fields on the result.
  const result = target ?? (type.create() as unknown as Record<string, unknown>);
  for (let i = 0; i < specials.length; i += 2) onSpecial(specials[i]!, specials[i + 1]!, result);
  return result;
}

function mergeInto(target: Record<string, unknown> | undefined, part: Record<string, unknown>): Record<string, unknown> {
  if (!target) return part;
  for (const key of Object.keys(part)) {
    const value = part[key];
    const existing = target[key];
    if (Array.isArray(value) && Array.isArray(existing) && Object.hasOwn(target, key)) {
      for (const item of value) existing.push(item);
    } else {
      target[key] = value;
    }
  }
  const unknowns = (part as { $unknowns?: Uint8Array[] }).$unknowns;
  if (unknowns) {
    const kept = (target as { $unknowns?: Uint8Array[] }).$unknowns;
    // A loop, not push(...): a message may hold more unknown fields than a call takes arguments.
    if (kept) for (const u of unknowns) kept.push(u); else Object.defineProperty(target, '$unknowns', { value: unknowns.slice(), writable: true, configurable: true });
  }
  return target;
}

export function encodeModelProto(proto: ModelProto): Uint8Array {
  const bytes = protobufEncoding(() => ModelProtoType.encode(proto as unknown as protobuf.Message).finish());
  // In Node protobufjs returns Node's buffer subclass, whose slice() shares memory; hand out a plain view.
  return bytes.constructor === Uint8Array ? bytes : new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

/**
 * Decodes an ONNX model into the graph IR. The model keeps a reference to `bytes` (unedited nodes
 * are written back from them), so they must not be changed while the model is in use.
 */
export function decodeModel(bytes: Uint8Array): Model {
  // One pass over the bytes: the main graph's node bodies are checked by the node store as it reads them.
  checkModelBytes(bytes, { skipMainGraphNodes: true });
  const shell = decodeModelShell(bytes);
  const store = shell && readNodeStore(bytes, shell.nodes.ranges);
  if (!store) {
    // Something the node reader does not take: the full check says what (or passes), then the plain decode.
    checkWireStructure(bytes, ModelProtoType);
    if (!shell) return modelFromProto(checkedModel(decodeChecked(ModelProtoType, bytes, 0, bytes.length) as ModelProto));
    return modelFromProto(shell.proto, shell.nodes);
  }
  return modelFromProto(shell.proto, { ...shell.nodes, store });
}

/**
 * Encodes the IR. An unedited model encodes to the bytes it was decoded from. Deferred payloads are
 * read. Each tensor payload is copied once, into the result.
 */
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
  return protobufEncoding(() => withLentPayloads(initializerProtos(model), () => encodePieces(model)));
}

function* initializerProtos(model: Model): Iterable<TensorProto> {
  for (const graph of model.allGraphs()) for (const v of graph.initializers) yield v.initializer!.proto;
}

/**
 * The model's encoding as chunks in file order, for writing to a file, a socket or a stream without
 * holding it whole: the message bytes, and the tensor payloads as they are held (views of the
 * model's buffers, not copies; payloads still in a file are read a piece at a time). Concatenated,
 * the chunks are encodeModel's bytes. The model must not be edited until the chunks are consumed.
 */
export function* encodeModelChunks(model: Model): Iterable<Uint8Array> {
  for (const piece of encodeModelPieces(model).pieces) {
    if (piece instanceof Uint8Array) yield piece;
    else if (piece.chunks) yield* piece.chunks();
    else yield piece.read();
  }
}

/**
 * Streams the model's encoding to `sink` chunk by chunk (see encodeModelChunks), awaiting each call
 * (back-pressure for an async writer); resolves to the number of bytes written. A chunk may be a
 * view of the model's own buffers: a sink that keeps chunks must not change them.
 */
export async function encodeModelTo(model: Model, sink: (chunk: Uint8Array) => unknown): Promise<number> {
  let written = 0;
  for (const chunk of encodeModelChunks(model)) {
    await sink(chunk);
    written += chunk.length;
  }
  return written;
}

/** protobufjs refuses messages nested deeper than 100 levels with a plain Error; that is the model's shape, so say so. */
function protobufEncoding<T>(encode: () => T): T {
  try {
    return encode();
  } catch (error) {
    if (error instanceof Error && !(error instanceof OnnxNeftuneError) && /max depth exceeded/.test(error.message)) {
      throw new OnnxModelError('The model nests protobuf messages more than 100 levels deep (deeply nested subgraphs or types); ' +
        'protobuf cannot write or read it. Flatten the nesting before saving.');
    }
    throw error;
  }
}

function encodePieces(model: Model): { pieces: EncodedPiece[]; length: number } {
  if (!hasByteBackedNodes(model.graph)) return encodeProtoPieces(modelToProto(model, { verbatim: true }));
  const proto = modelToProto(model, { mainGraphNodes: false, verbatim: true });
  // The main graph's node list is assembled here: runs of unedited nodes are copied from the bytes
  // they were read from as they are. protobufjs writes fields in number order and unknown fields
  // last, so the graph (field 7) goes before the first field numbered above 7 or unknown, and its
  // nodes (field 1) before everything else in the graph.
  const graph = proto.graph!; // a graph with nodes is always written
  const shell = cloneShallow(proto);
  delete shell.graph;
  const modelBytes = ModelProtoType.encode(shell as unknown as protobuf.Message).finish();
  const at = insertionPoint(modelBytes, 7);
  const head = fieldsAsPieces(modelBytes, ModelProtoType, 0, at, true);
  const tail = fieldsAsPieces(modelBytes, ModelProtoType, at, modelBytes.length, true);
  const nodes = nodeEntries(model.graph);
  const restBytes = GraphProtoType.encode(graph as unknown as protobuf.Message).finish();
  const rest = fieldsAsPieces(restBytes, GraphProtoType, 0, restBytes.length, true);
  const graphSize = nodes.size + rest.size;
  const graphTag = Uint8Array.of(7 * 8 + 2, ...encodeVarint(graphSize));
  const pieces = coalesce([...head.pieces, graphTag, ...nodes.pieces, ...rest.pieces, ...tail.pieces]);
  return { pieces, length: head.size + graphTag.length + graphSize + tail.size };
}

function hasByteBackedNodes(graph: Graph): boolean {
  if (graph._store) return true;
  let found = false;
  graph._forEachEntry((node) => { if (node._srcBytes) found = true; }, () => {});
  return found;
}

/** Offset of the first top-level field numbered above `fieldNo` or unknown to the schema. */
function insertionPoint(bytes: Uint8Array, fieldNo: number): number {
  for (let pos = 0; pos < bytes.length;) {
    const [tag, afterTag] = varintAt(bytes, pos);
    const wire = tag % 8, number = (tag - wire) / 8;
    if (number > fieldNo || !ModelProtoType.fieldsById[number]) return pos;
    pos = skipValue(bytes, wire, afterTag);
  }
  return bytes.length;
}

/**
 * The graph's node entries (GraphProto field 1) as pieces: each run of unedited nodes that lie
 * back to back in their source is one range of it; other nodes are encoded.
 */
function nodeEntries(graph: Graph): { pieces: EncodedPiece[]; size: number } {
  const pieces: EncodedPiece[] = [];
  let size = 0;
  let run: Uint8Array | undefined, runStart = 0, runEnd = 0;
  const add = (buf: Uint8Array, start: number, end: number, encoded: boolean) => {
    const part = fieldsAsPieces(buf, GraphProtoType, start, end, encoded);
    for (const p of part.pieces) pieces.push(p);
    size += part.size;
  };
  const flush = () => { if (run) add(run, runStart, runEnd, false); run = undefined; };
  /** Writes an unchanged node as its source bytes: runs of entries that lie back to back are one piece. */
  const fromSource = (src: Uint8Array, entryStart: number, bodyStart: number, bodyEnd: number) => {
    if (entryStart < 0) {
      // A length prefix longer than it needs to be: the same body under a minimal one.
      flush();
      const head = Uint8Array.of(1 * 8 + 2, ...encodeVarint(bodyEnd - bodyStart));
      const entry = new Uint8Array(head.length + bodyEnd - bodyStart);
      entry.set(head);
      entry.set(src.subarray(bodyStart, bodyEnd), head.length);
      add(entry, 0, entry.length, false);
      return;
    }
    if (run === src && runEnd === entryStart) { runEnd = bodyEnd; return; }
    flush();
    run = src; runStart = entryStart; runEnd = bodyEnd;
  };
  graph._forEachEntry((node) => {
    const src = node._srcBytes;
    if (src && unchangedFromBytes(node, src, node._srcStart, node._srcEnd, node._srcAttributes)) {
      const entryStart = entryStartOf(src, node._srcStart, node._srcEnd);
      if (entryStart >= 0) { fromSource(src, entryStart, node._srcStart, node._srcEnd); return; }
    }
    flush();
    const entry = GraphProtoType.encode({ node: [nodeToProto(node, { verbatim: true })] } as unknown as protobuf.Message).finish();
    add(entry, 0, entry.length, true);
  }, (store, from, to) => {
    for (let k = from; k < to; k++) fromSource(store.bytes, store.entryStart[k]!, store.bodyStart[k]!, store.bodyEnd[k]!);
  });
  flush();
  return { pieces, size };
}
