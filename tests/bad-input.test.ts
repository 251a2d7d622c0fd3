import { test } from 'node:test';
import assert from 'node:assert/strict';
import { OnnxDecodeError, decodeModel, encodeModel } from '../src/graph/index.js';
import { buildTinyGpt } from '../examples/models.js';

const small = encodeModel(buildTinyGpt({ vocab: 8, dim: 4, maxPositions: 4 }));

/** Decoding must give a model or an OnnxDecodeError; nothing else may escape. */
function decodeOrTypedError(bytes: Uint8Array): 'ok' | OnnxDecodeError {
  try {
    const model = decodeModel(bytes);
    encodeModel(model); // a decodable model must also encode
    return 'ok';
  } catch (error) {
    if (error instanceof OnnxDecodeError) return error;
    throw new Error(`untyped failure: ${(error as Error).stack}`);
  }
}

test('truncating a small model at every byte gives typed errors only', () => {
  let errors = 0;
  for (let len = 0; len < small.length; len++) {
    const result = decodeOrTypedError(small.subarray(0, len));
    if (result !== 'ok') {
      errors++;
      assert.match(result.message, /Not a valid ONNX model/);
      assert.ok(result.offset === undefined || (result.offset >= 0 && result.offset <= len));
    }
  }
  // Cutting inside the graph field must always be detected (the graph is the last big field).
  assert.ok(errors > small.length * 0.9, `${errors} of ${small.length} truncations detected`);
});

test('random byte flips give a model or a typed error, never a crash', () => {
  let x = 12345;
  const rand = () => { x ^= x << 13; x >>>= 0; x ^= x >>> 17; x ^= x << 5; x >>>= 0; return x; };
  let typed = 0;
  for (let trial = 0; trial < 3000; trial++) {
    const bytes = small.slice();
    const flips = 1 + (rand() % 4);
    for (let f = 0; f < flips; f++) bytes[rand() % bytes.length] = rand() & 0xff;
    if (decodeOrTypedError(bytes) !== 'ok') typed++;
  }
  assert.ok(typed > 100, `expected many flips to be rejected, got ${typed}`);
});

test('errors name the field path and byte offset', () => {
  const cut = small.subarray(0, Math.floor(small.length / 2));
  const error = decodeOrTypedError(cut);
  assert.ok(error instanceof OnnxDecodeError);
  assert.equal(error.path, 'ModelProto');
  assert.match(error.message, /field graph claims \d+ bytes but only \d+ remain/);
  assert.match(error.message, /byte offset \d+/);
  assert.equal(error.code, 'ONNX_DECODE');

  // Corrupt a length deep inside: the wire type of the third node's first input (a string).
  const model = decodeModel(small);
  const third = model.graph.nodes[2]!;
  const name = new TextEncoder().encode(third.inputs[0]!.name);
  const at = indexOf(small, new Uint8Array([(1 << 3) | 2, name.length, ...name])); // NodeProto.input tag
  const broken = small.slice();
  broken[at] = (1 << 3) | 0; // the string field now claims to be a varint
  const deep = decodeOrTypedError(broken);
  assert.ok(deep instanceof OnnxDecodeError);
  assert.match(deep.path, /^ModelProto\.graph\.node\[\d+\]/);
});

function indexOf(haystack: Uint8Array, needle: Uint8Array): number {
  outer: for (let i = 0; i + needle.length <= haystack.length; i++) {
    for (let j = 0; j < needle.length; j++) if (haystack[i + j] !== needle[j]) continue outer;
    return i;
  }
  throw new Error('needle not found');
}

test('a length prefix that lies is rejected before anything is allocated', () => {
  // ModelProto.graph (field 7, wire type 2) claiming 2^40 bytes.
  const bytes = new Uint8Array([0x08, 0x08, 0x3a, 0x80, 0x80, 0x80, 0x80, 0x80, 0x20]);
  const error = decodeOrTypedError(bytes);
  assert.ok(error instanceof OnnxDecodeError);
  assert.match(error.message, /claims 1099511627776 bytes/);
  assert.match(error.path, /^ModelProto/);
});

test('files that are not ONNX models are rejected with a typed error', () => {
  const samples: Record<string, Uint8Array> = {
    empty: new Uint8Array(0),
    text: new TextEncoder().encode('hello, this is not a model\n'),
    png: new Uint8Array([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0, 0, 0, 13]),
    json: new TextEncoder().encode('{"graph": {"node": []}}'),
    zeros: new Uint8Array(64),
  };
  for (const [name, bytes] of Object.entries(samples)) {
    const result = decodeOrTypedError(bytes);
    assert.ok(result instanceof OnnxDecodeError, `${name} must be rejected`);
  }
});

test('deeply nested input is rejected, not a stack overflow', () => {
  // graph -> node -> attribute -> g -> node -> attribute -> g ... 200 levels deep.
  let inner = new Uint8Array(0);
  const wrap = (field: number, body: Uint8Array) => {
    const len: number[] = [];
    let n = body.length;
    do { let b = n & 0x7f; n >>>= 7; if (n) b |= 0x80; len.push(b); } while (n);
    return new Uint8Array([(field << 3) | 2, ...len, ...body]);
  };
  for (let i = 0; i < 200; i++) inner = wrap(1, wrap(5, wrap(6, inner))); // node.attribute.g
  const model = new Uint8Array([0x08, 0x08, ...wrap(7, inner)]);
  const result = decodeOrTypedError(model);
  assert.ok(result instanceof OnnxDecodeError);
  assert.match(result.message, /nested deeper/);
});
