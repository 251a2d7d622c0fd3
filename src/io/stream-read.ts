/**
 * Reads a model from a stream (stdin) without trusting it to end: the top-level ModelProto fields
 * are checked as the bytes arrive, so input that cannot be a model (zeros, text, another format)
 * fails at its first impossible field, and a field that claims more bytes than a model may have
 * fails at once, both without reading further. The full structure check runs when the bytes are
 * decoded (loadModelBytes).
 */
import { OnnxDecodeError } from '../graph/errors.js';
import { ModelProtoType } from '../graph/proto.js';
import { ModelTooLargeError } from './errors.js';
import { MAX_PROTOBUF_BYTES } from './files.js';

export interface ReadModelStreamOptions {
  /** Refuse input longer than this (default 2 GiB - 1, protobuf's limit for one message). */
  maxBytes?: number;
}

/**
 * Collects a model's bytes from `stream`, checking each top-level field of ModelProto on arrival:
 * a valid tag (field number 1 to 2^29 - 1, wire type 0, 1, 2 or 5; a known field with its own
 * wire type) and a length that stays within `maxBytes`. Throws OnnxDecodeError (path ModelProto,
 * byte offset) or ModelTooLargeError at the first problem and stops reading (the stream's
 * iterator is closed, which destroys a Node stream).
 */
export async function readModelStream(stream: AsyncIterable<Uint8Array>, options: ReadModelStreamOptions = {}): Promise<Uint8Array> {
  const maxBytes = options.maxBytes ?? MAX_PROTOBUF_BYTES;
  const fields = new TopLevelFields(maxBytes);
  for await (const chunk of stream) {
    if (!(chunk instanceof Uint8Array)) throw new TypeError('readModelStream expects a stream of bytes (Uint8Array chunks), not text');
    fields.push(chunk);
  }
  return fields.finish();
}

const enum Wire { Varint = 0, Fixed64 = 1, Bytes = 2, Fixed32 = 5 }

const MAX_FIELD_NUMBER = 2 ** 29 - 1;

/** The wire type each known ModelProto field must use (enums and int64 are varints, the rest length-delimited). */
const EXPECTED_WIRE = new Map<number, { name: string; wire: number; repeated: boolean }>(
  ModelProtoType.fieldsArray.map((f) => {
    const resolved = f.resolve().resolvedType;
    const scalar = resolved && !('fieldsById' in resolved) ? 'int32' : f.type;
    const wire = ['int32', 'int64', 'uint32', 'uint64', 'sint32', 'sint64', 'bool'].includes(scalar) ? Wire.Varint
      : ['float', 'fixed32', 'sfixed32'].includes(scalar) ? Wire.Fixed32
      : ['double', 'fixed64', 'sfixed64'].includes(scalar) ? Wire.Fixed64 : Wire.Bytes;
    return [f.id, { name: f.name, wire, repeated: f.repeated }];
  }),
);

/** Chunks as they arrive, and a scan over their top-level fields that resumes where it stopped. */
class TopLevelFields {
  private readonly chunks: Uint8Array[] = [];
  private readonly starts: number[] = [];
  private received = 0;
  /** Offset of the next field's tag (may lie beyond `received` while a field body is still arriving). */
  private next = 0;
  /** The last field whose header was read, for the message when the input ends inside its body. */
  private last: { at: number; body: number; end: number; name: string } | undefined;
  private cursor = 0;

  constructor(private readonly maxBytes: number) {}

  push(chunk: Uint8Array): void {
    if (chunk.length === 0) return;
    if (this.received + chunk.length > this.maxBytes) {
      throw new ModelTooLargeError(`The input is more than ${this.maxBytes} bytes, the most a model read as one stream may have (protobuf limits a model file to 2 GiB). Keep the weights in external data (onnx.save_model(..., save_as_external_data=True)) and pass the model's file path.`);
    }
    this.chunks.push(new Uint8Array(chunk)); // a copy: a producer may reuse its buffer
    this.starts.push(this.received);
    this.received += chunk.length;
    this.scan();
  }

  finish(): Uint8Array {
    if (this.next < this.received) this.fail('a varint runs past the end of the input', this.next);
    if (this.next > this.received) {
      const { body, end, name } = this.last!;
      this.fail(`field ${name} claims ${end - body} bytes but only ${this.received - body} remain`, body);
    }
    if (this.chunks.length === 1) return this.chunks[0]!;
    const out = new Uint8Array(this.received);
    for (let i = 0; i < this.chunks.length; i++) out.set(this.chunks[i]!, this.starts[i]!);
    this.chunks.length = 0;
    return out;
  }

  private fail(reason: string, offset: number): never {
    throw new OnnxDecodeError(reason, 'ModelProto', offset);
  }

  private byteAt(pos: number): number | undefined {
    if (pos >= this.received) return undefined;
    while (this.starts[this.cursor]! > pos) this.cursor--;
    while (this.starts[this.cursor]! + this.chunks[this.cursor]!.length <= pos) this.cursor++;
    return this.chunks[this.cursor]![pos - this.starts[this.cursor]!];
  }

  /** The varint at `pos` and the offset after it; undefined while its bytes have not all arrived. */
  private varint(pos: number, maxLength: number, what: string): [number, number] | undefined {
    let value = 0, scale = 1;
    for (let i = 0; i < maxLength; i++) {
      const b = this.byteAt(pos + i);
      if (b === undefined) return undefined;
      value += (b & 0x7f) * scale;
      if (b < 0x80) return [value, pos + i + 1];
      scale *= 128;
    }
    return this.fail(`${what} is longer than ${maxLength} bytes`, pos);
  }

  private scan(): void {
    while (this.next < this.received) {
      const at = this.next;
      const tagRead = this.varint(at, 5, 'a field tag');
      if (!tagRead) return;
      const [tag, afterTag] = tagRead;
      const wire = tag % 8;
      const number = (tag - wire) / 8;
      if (number === 0) this.fail('field number 0', at);
      if (number > MAX_FIELD_NUMBER) this.fail(`field number ${number} is beyond protobuf's limit of ${MAX_FIELD_NUMBER}`, at);
      if (wire === 3 || wire === 4) this.fail('group wire type (ONNX never uses protobuf groups)', at);
      if (wire > 5) this.fail(`invalid wire type ${wire}`, at);
      const known = EXPECTED_WIRE.get(number);
      const name = known?.name ?? `#${number}`;
      if (known && wire !== known.wire && !(wire === Wire.Bytes && known.repeated)) {
        this.fail(`field ${name} has wire type ${wire}, expected ${known.wire}`, at);
      }
      let end: number;
      if (wire === Wire.Varint) {
        const value = this.varint(afterTag, 10, `the value of field ${name}`);
        if (!value) return;
        end = value[1];
      } else if (wire === Wire.Fixed64) {
        end = afterTag + 8;
      } else if (wire === Wire.Fixed32) {
        end = afterTag + 4;
      } else {
        const length = this.varint(afterTag, 10, `the length of field ${name}`);
        if (!length) return;
        const [len, body] = length;
        end = body + len;
        if (end > this.maxBytes) {
          throw new ModelTooLargeError(`Field ${name} at byte offset ${at} claims ${len} bytes, which would make the model at least ${end} bytes, over the limit of ${this.maxBytes} (protobuf limits a model file to 2 GiB). The input is corrupt, or a model this large needs its weights in external data and a file path.`);
        }
        this.last = { at, body, end, name };
      }
      if (wire !== Wire.Bytes) this.last = { at, body: afterTag, end, name };
      this.next = end;
    }
  }
}
