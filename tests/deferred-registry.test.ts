import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { decodeModel, encodeModel, type Model } from '../src/graph/index.js';
import { deferredPayloadOf, payloadRegistryOf } from '../src/graph/deferred.js';
import { readModelFile } from '../src/io/index.js';
import { buildTinyGpt } from '../examples/models.js';
import { tempDir } from './cli-helpers.js';
import { projectRoot } from './helpers.js';

const dir = tempDir('registry');
const WTE = 'transformer.wte.weight';
const rawOf = (m: Model, name: string) => m.graph.initializer(name)!.initializer!.proto.raw_data!;

function writeGpt(name: string, vocab: number): string {
  const file = path.join(dir, name);
  writeFileSync(file, encodeModel(buildTinyGpt({ vocab, dim: 64 })));
  return file;
}

test('two models loaded lazily keep their own payload registries and never resolve each other\'s placeholders', () => {
  const fileB = writeGpt('b.onnx', 2048);
  const a = readModelFile(writeGpt('a.onnx', 4096), { deferThreshold: 4096 });
  const b = readModelFile(fileB, { deferThreshold: 4096 });
  const b2 = readModelFile(fileB, { deferThreshold: 4096 });
  try {
    const [rawA, rawB] = [rawOf(a.model, WTE), rawOf(b.model, WTE)];
    const [ra, rb] = [payloadRegistryOf(rawA), payloadRegistryOf(rawB)];
    assert.ok(ra && rb && ra !== rb, 'each load has its own registry');
    const deferred = (m: Model) => m.graph.initializers.filter((v) => deferredPayloadOf(v.initializer!.proto.raw_data)).length;
    assert.equal(ra.size, deferred(a.model));
    assert.equal(rb.size, deferred(b.model));
    assert.equal(rb.payloadAt(rawA, 0), undefined);
    assert.equal(ra.payloadAt(rawB, 0), undefined);
    // A's placeholder written into (another load of) B's bytes is 16 bytes of data there, not A's table.
    const placeholderOfA = rawA.slice();
    rawOf(b2.model, WTE).set(placeholderOfA);
    assert.equal(deferredPayloadOf(rawOf(b2.model, WTE)), undefined);
    assert.deepEqual(b2.model.graph.initializer(WTE)!.initializer!.rawBytes(), placeholderOfA);
    assert.deepEqual(rawOf(decodeModel(encodeModel(b2.model)), WTE), placeholderOfA, 'the encoding agrees with what the tensor reads');
    assert.equal(deferredPayloadOf(rawA)!.length, 4096 * 64 * 4, 'A still reads its own table');
  } finally {
    for (const loaded of [a, b, b2]) loaded.close();
  }
});

test('a dropped model\'s payload registry is collected; a kept model\'s stays readable', () => {
  const file = writeGpt('gc.onnx', 1024);
  const dist = (p: string) => JSON.stringify(pathToFileURL(path.join(projectRoot, 'dist', p)).href);
  const script = path.join(dir, 'gc-check.mjs');
  writeFileSync(script, `
import { readModelFile } from ${dist('src/io/index.js')};
import { deferredPayloadOf, payloadRegistryOf } from ${dist('src/graph/deferred.js')};
const refs = (loaded) => {
  const raw = loaded.model.graph.initializer(${JSON.stringify(WTE)}).initializer.proto.raw_data;
  return { registry: new WeakRef(payloadRegistryOf(raw)), payload: new WeakRef(deferredPayloadOf(raw)) };
};
let dropped = readModelFile(${JSON.stringify(file)}, { deferThreshold: 4096 });
const kept = readModelFile(${JSON.stringify(file)}, { deferThreshold: 4096 });
const gone = refs(dropped), stays = refs(kept);
dropped.close();
dropped = undefined;
// deref() keeps its target to the end of the current job: collect in a later one.
const tick = () => new Promise((r) => setTimeout(r, 5));
for (let i = 0; i < 20 && (gone.registry.deref() || gone.payload.deref()); i++) { await tick(); globalThis.gc(); await tick(); }
console.log(JSON.stringify({
  droppedRegistry: gone.registry.deref() !== undefined, droppedPayload: gone.payload.deref() !== undefined,
  keptRegistry: stays.registry.deref() !== undefined, keptRead: stays.payload.deref()?.read().length,
}));
kept.close();
`);
  const run = spawnSync(process.execPath, ['--expose-gc', script], { encoding: 'utf8', timeout: 60_000 });
  assert.equal(run.status, 0, run.stderr);
  assert.deepEqual(JSON.parse(run.stdout), { droppedRegistry: false, droppedPayload: false, keptRegistry: true, keptRead: 1024 * 64 * 4 });
});
