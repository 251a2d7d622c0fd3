/**
 * The encoders and decoders generated at build time (scripts/gen-schema.mjs) are the ones in use,
 * and they are the code protobufjs would generate for the same schema at run time.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import protobuf from 'protobufjs/light.js';

// Counted before the library loads (hence the dynamic imports below): every codec protobufjs generates.
const generated: string[] = [];
const codegen = protobuf.util.codegen;
protobuf.util.codegen = ((params: string[], name?: string) => {
  // The parameters of protobufjs's encoders and decoders (src/encoder.js, src/decoder.js).
  if (['m,w,q', 'r,l,z,q,g'].includes(params.join())) generated.push(params.join());
  return codegen(params, name as string);
}) as typeof codegen;

const { encodeModel, decodeModel } = await import('../src/graph/index.js');
const { buildTinyGpt } = await import('../examples/models.js');
const { onnxSchemaJson } = await import('../src/graph/schema.generated.js');
const { onnxCodecs } = await import('../src/graph/codecs.generated.js');

test('decoding and encoding a model generates no protobufjs code at run time', () => {
  const bytes = encodeModel(buildTinyGpt());
  assert.deepEqual(encodeModel(decodeModel(bytes)), bytes);
  assert.deepEqual(generated, []);
});

test('the build-time codecs are the source protobufjs generates at run time, for every message type', () => {
  const root = protobuf.Root.fromJSON(onnxSchemaJson as protobuf.INamespace);
  // Whitespace aside (the TypeScript build reprints the functions it compiles).
  const squeeze = (source: string) => source.replace(/[\s;]+/g, '');
  // Codegen#toString takes the function's name (its typings say otherwise).
  const sourceOf = (gen: object, name: string) => (gen.toString as (functionName: string) => string)(name);
  for (const [name, codec] of Object.entries(onnxCodecs)) {
    const type = root.lookupType(name);
    type.setup();
    const types = type.fieldsArray.map((field) => field.resolve().resolvedType);
    const encode = codec.encode(protobuf.Writer, types, protobuf.util);
    const decode = codec.decode(protobuf.Reader, types, protobuf.util, type.ctor);
    assert.equal(squeeze(encode.toString()), squeeze(sourceOf(protobuf.encoder(type), `${type.name}$encode`)), `${name} encoder`);
    assert.equal(squeeze(decode.toString()), squeeze(sourceOf(protobuf.decoder(type), `${type.name}$decode`)), `${name} decoder`);
  }
  assert.ok(Object.keys(onnxCodecs).includes('onnx.ModelProto'));
});
