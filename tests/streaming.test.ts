import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { decodeModel, encodeModel, encodeModelChunks, encodeModelProto, encodeModelTo, modelToProto, type Model } from '../src/graph/index.js';
import { deferredPayloadOf } from '../src/graph/deferred.js';
import { applyNeftune, stripNeftune, type NeftuneOptions } from '../src/passes/index.js';
import { readCompact, readModelFile, saveModelFile } from '../src/io/index.js';
import { buildTinyBert, buildTinyGpt } from '../examples/models.js';
import { tempDir } from './cli-helpers.js';
import { firstDifference, fixtureNames, fixturesDir, patchIfPossible, sameBytes, skipWithoutFixtures } from './helpers.js';

const dir = tempDir('stream');
const read = (p: string) => new Uint8Array(readFileSync(p));

function deferredCount(model: Model): number {
  let n = 0;
  for (const g of model.allGraphs()) for (const v of g.initializers) if (deferredPayloadOf(v.initializer!.proto.raw_data)) n++;
  return n;
}

/** The in-memory path and the streaming path must write the same bytes. */
async function compare(file: string, edit: (m: Model) => void, threshold: number): Promise<number> {
  const inMemory = decodeModel(read(file));
  edit(inMemory);
  const expected = encodeModel(inMemory);
  const loaded = readModelFile(file, { deferThreshold: threshold });
  const deferred = deferredCount(loaded.model);
  edit(loaded.model);
  const out = path.join(dir, `${path.basename(file)}.${Math.random().toString(36).slice(2)}.out.onnx`);
  for (const save of ['new file', 'replacing the file']) {
    await saveModelFile(loaded, out);
    const written = read(out);
    assert.ok(sameBytes(written, expected), `${path.basename(file)} (${save}): streaming and in-memory differ at byte ${firstDifference(written, expected)}`);
  }
  return deferred;
}

const edits: Record<string, (m: Model) => void> = {
  'no change': () => undefined,
  patch: (m) => { applyNeftune(m, { seed: 1 } satisfies NeftuneOptions); },
  'patch with alpha input, mask mode': (m) => { applyNeftune(m, { mode: 'mask', alphaInput: true }); },
  // The re-patch trial copy keeps payloads deferred; the result must still match the in-memory path.
  're-patch': (m) => { applyNeftune(m, { seed: 1 }); applyNeftune(m, { seed: 2, alpha: 3, repatch: true }); },
};

test('streaming writes the same bytes as the in-memory path (builder models, payloads left on disk)', async () => {
  const files = {
    gpt: encodeModel(buildTinyGpt({ vocab: 4096, dim: 64 })),
    bert: encodeModel(buildTinyBert({ vocab: 2048, dim: 32, dtype: 'float16' })),
    // a 12.8 MB table spans several copy buffers, which are reused while writes are in flight
    big: encodeModel(buildTinyGpt({ vocab: 50_000, dim: 64 })),
  };
  for (const [name, bytes] of Object.entries(files)) {
    const file = path.join(dir, `${name}.onnx`);
    writeFileSync(file, bytes);
    for (const [label, edit] of Object.entries(edits)) {
      if (label.includes('mask') && name !== 'bert') continue;
      const deferred = await compare(file, edit, 1024);
      assert.ok(deferred >= 2, `${name} ${label}: payloads were deferred (${deferred})`);
    }
  }
});

test('streaming strip of a patched file restores the original bytes', async () => {
  const original = encodeModel(buildTinyGpt({ vocab: 4096, dim: 64 }));
  const model = decodeModel(original);
  applyNeftune(model, { alphaInput: true });
  const patched = path.join(dir, 'patched.onnx');
  writeFileSync(patched, encodeModel(model));
  const loaded = readModelFile(patched, { deferThreshold: 1024 });
  stripNeftune(loaded.model);
  const out = path.join(dir, 'restored.onnx');
  await saveModelFile(loaded, out);
  assert.ok(sameBytes(read(out), original));
});

test('deferred payloads read back exactly and are never held by the compact copy', () => {
  const bytes = encodeModel(buildTinyGpt({ vocab: 4096, dim: 64 }));
  const file = path.join(dir, 'lazy.onnx');
  writeFileSync(file, bytes);
  const compact = readCompact(file, 1024);
  assert.ok(compact.bytes.length < bytes.length / 10, `compact copy is ${compact.bytes.length} of ${bytes.length} bytes`);
  assert.equal(compact.deferred, 2);
  const lazy = readModelFile(file, { deferThreshold: 1024 }).model;
  const eager = decodeModel(bytes);
  const wte = 'transformer.wte.weight';
  assert.ok(deferredPayloadOf(lazy.graph.initializer(wte)!.initializer!.proto.raw_data));
  assert.ok(sameBytes(lazy.graph.initializer(wte)!.initializer!.rawBytes(), eager.graph.initializer(wte)!.initializer!.rawBytes()));
});

test('streaming equals in-memory for every fixture, with tiny payloads deferred too', { skip: skipWithoutFixtures }, async () => {
  let patched = 0;
  for (const name of fixtureNames()) {
    const file = path.join(fixturesDir, name);
    await compare(file, () => undefined, 64);
    await compare(file, (m) => { if (patchIfPossible(m)) patched++; }, 64); // fixtures without a token table: compared unchanged
  }
  // compare() edits twice (in memory, streamed); 15 fixtures have a token embedding.
  assert.equal(patched / 2, 15);
});

test('after an in-place save, a lazily loaded model still reads its payloads from the new file', async () => {
  const file = path.join(dir, 'inplace.onnx');
  const original = encodeModel(buildTinyGpt({ vocab: 4096, dim: 64 }));
  writeFileSync(file, original);
  const loaded = readModelFile(file, { deferThreshold: 1024 });
  applyNeftune(loaded.model, { alphaInput: true });
  await saveModelFile(loaded, file, { inPlace: true });
  // The payloads moved (the patch added nodes before them); the model must still encode to the file.
  assert.ok(sameBytes(encodeModel(loaded.model), read(file)));
  stripNeftune(loaded.model);
  await saveModelFile(loaded, file, { inPlace: true });
  assert.ok(sameBytes(read(file), original));
});

/** Concatenated chunks. */
function joined(chunks: Iterable<Uint8Array>): Uint8Array {
  const list = [...chunks];
  const out = new Uint8Array(list.reduce((n, c) => n + c.length, 0));
  let at = 0;
  for (const c of list) { out.set(c, at); at += c.length; }
  return out;
}

/** Whether some chunk is the very memory of a payload (a view, not a copy). */
const sharesMemory = (chunks: Uint8Array[], payload: Uint8Array) =>
  chunks.some((c) => c.buffer === payload.buffer && c.byteOffset === payload.byteOffset && c.length === payload.length);

test('encodeModelChunks, encodeModelTo and encodeModel write the same bytes as protobufjs encoding of the model, payloads handed out as views', async () => {
  const built = buildTinyGpt({ vocab: 4096, dim: 64 });
  const decoded = decodeModel(encodeModel(buildTinyBert({ vocab: 2048, dim: 32 })));
  const patched = decodeModel(encodeModel(built));
  applyNeftune(patched, { seed: 1 });
  for (const [name, model] of Object.entries({ built, decoded, patched })) {
    const reference = encodeModelProto(modelToProto(model, { verbatim: true }));
    const table = [...model.graph.initializers].map((v) => v.initializer!.proto.raw_data!).reduce((a, b) => (a.length >= b.length ? a : b));
    const chunks = [...encodeModelChunks(model)];
    assert.ok(sameBytes(joined(chunks), reference), `${name}: chunks differ at byte ${firstDifference(joined(chunks), reference)}`);
    assert.ok(sharesMemory(chunks, table), `${name}: the largest payload (${table.length} bytes) is handed out as a view of the model's memory`);
    const inMemory = encodeModel(model);
    assert.ok(sameBytes(inMemory, reference), `${name}: encodeModel differs at byte ${firstDifference(inMemory, reference)}`);
    assert.ok(!sharesMemory([inMemory], table) && inMemory.buffer !== table.buffer, `${name}: encodeModel returns its own bytes`);
    // A slow asynchronous sink that keeps what it is given.
    const kept: Uint8Array[] = [];
    const written = await encodeModelTo(model, async (chunk) => { await new Promise((r) => setImmediate(r)); kept.push(chunk); });
    assert.equal(written, reference.length);
    assert.ok(sameBytes(joined(kept), reference), `${name}: encodeModelTo differs`);
    // Encoding lends payloads to the encoder only while it runs: the model holds its own bytes again.
    const after = [...model.graph.initializers].map((v) => v.initializer!.proto.raw_data!).reduce((a, b) => (a.length >= b.length ? a : b));
    assert.equal(after, table);
  }
});

test('encodeModelChunks reads payloads left on disk piece by piece, and equals the in-memory encoding', () => {
  const bytes = encodeModel(buildTinyGpt({ vocab: 50_000, dim: 64 })); // a 12.8 MB table: several 4 MiB pieces
  const file = path.join(dir, 'chunks.onnx');
  writeFileSync(file, bytes);
  const loaded = readModelFile(file, { deferThreshold: 1024 });
  try {
    assert.ok(deferredCount(loaded.model) >= 2);
    applyNeftune(loaded.model, { seed: 1 });
    const inMemory = decodeModel(bytes);
    applyNeftune(inMemory, { seed: 1 });
    const chunks = [...encodeModelChunks(loaded.model)];
    assert.ok(Math.max(...chunks.map((c) => c.length)) <= 4 << 20, 'no chunk larger than 4 MiB');
    const expected = encodeModel(inMemory);
    assert.ok(sameBytes(joined(chunks), expected), `differs at byte ${firstDifference(joined(chunks), expected)}`);
    assert.ok(sameBytes(encodeModel(loaded.model), expected));
  } finally {
    loaded.close();
  }
});
