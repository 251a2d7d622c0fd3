import { test } from 'node:test';
import assert from 'node:assert/strict';
import { copyFileSync, existsSync, linkSync, mkdirSync, readFileSync, readdirSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { Tensor, decodeModel, encodeModel, type Model } from '../src/graph/index.js';
import { encodeCheckedBytes, saveWithExternalData, ModelTooLargeError } from '../src/io/index.js';
import { isPatched } from '../src/passes/index.js';
import { buildTinyGpt } from '../examples/models.js';
import { cliPath, runCli, runCliJson, spawn, tempDir } from './cli-helpers.js';
import { fixturesDir, sameBytes, skipWithoutFixtures } from './helpers.js';
import { ort } from './ort-helpers.js';

const root = tempDir('files');
const read = (p: string) => new Uint8Array(readFileSync(p));

/** A GPT-shaped model saved as dir/name with its weights in dir/name.data. */
async function externalModel(dir: string, name = 'model.onnx'): Promise<{ file: string; data: string; bytes: Uint8Array }> {
  mkdirSync(dir, { recursive: true });
  const file = path.join(dir, name);
  await saveWithExternalData(buildTinyGpt({ vocab: 128, dim: 32, exposeEmbeddings: true }), file, { threshold: 256 });
  return { file, data: `${file}.data`, bytes: read(file) };
}

async function runsFromFile(file: string): Promise<void> {
  const session = await ort.InferenceSession.create(file);
  const out = await session.run({ input_ids: new ort.Tensor('int64', BigInt64Array.from([1n, 5n, 9n]), [1, 3]) });
  assert.deepEqual(out['inputs_embeds']!.dims, [1, 3, 32]);
  await session.release();
}

test('external data, output in the same folder: data referenced as it is, untouched', async () => {
  const { file, data, bytes } = await externalModel(path.join(root, 'same'));
  const dataBefore = read(data);
  const mtime = statSync(data).mtimeMs;
  const out = path.join(root, 'same', 'model.neftune.onnx');
  const r = runCliJson(['patch', file, '-o', out]);
  assert.equal(r.code, 0, r.stdout);
  assert.deepEqual(readdirSync(path.join(root, 'same')).sort(), ['model.neftune.onnx', 'model.onnx', 'model.onnx.data']);
  assert.ok(sameBytes(read(data), dataBefore));
  assert.equal(statSync(data).mtimeMs, mtime);
  await runsFromFile(out);
  assert.equal(runCli(['strip', out, '-o', path.join(root, 'same', 'restored.onnx')]).code, 0);
  assert.ok(sameBytes(read(path.join(root, 'same', 'restored.onnx')), bytes));
});

test('external data, output elsewhere: data copied beside it, never over a different file', async () => {
  const { file, data } = await externalModel(path.join(root, 'src'));
  const other = path.join(root, 'other');
  const r = runCliJson(['patch', file, '-o', path.join(other, 'patched.onnx')]);
  assert.equal(r.code, 0, r.stdout);
  const copied = path.join(other, 'model.onnx.data');
  assert.ok(sameBytes(read(copied), read(data)));
  assert.equal(statSync(copied).nlink, 1, 'a copy, not a hard link');
  assert.equal(statSync(data).nlink, 1);
  await runsFromFile(path.join(other, 'patched.onnx'));
  // Again into the same folder: the identical data file is reused.
  assert.equal(runCli(['patch', file, '-o', path.join(other, 'patched2.onnx')]).code, 0);
  // A different file of the same name at the destination is never overwritten.
  const third = path.join(root, 'third');
  mkdirSync(third);
  writeFileSync(path.join(third, 'model.onnx.data'), 'somebody else\'s data');
  const refused = runCliJson(['patch', file, '-o', path.join(third, 'patched.onnx')]);
  assert.equal(refused.code, 5);
  assert.match(refused.json.files[0].error.message, /different file of that name/);
  assert.equal(readFileSync(path.join(third, 'model.onnx.data'), 'utf8'), 'somebody else\'s data');
  assert.ok(!existsSync(path.join(third, 'patched.onnx')), 'nothing written when the data cannot follow');
});

test('the genai fixture with external data patches into another folder and still runs', { skip: skipWithoutFixtures }, async () => {
  const src = path.join(root, 'genai');
  mkdirSync(src);
  copyFileSync(path.join(fixturesDir, 'genai_tiny_llama_fp16_extdata.onnx'), path.join(src, 'model.onnx'));
  copyFileSync(path.join(fixturesDir, 'model.onnx.data'), path.join(src, 'model.onnx.data'));
  const inspect = runCliJson(['inspect', path.join(src, 'model.onnx')]);
  assert.deepEqual(inspect.json.files[0].model.externalData, [{ location: 'model.onnx.data', present: true, bytes: 2130080, tensors: 23 }]);
  const out = path.join(root, 'genai-out', 'model.onnx');
  assert.equal(runCli(['patch', path.join(src, 'model.onnx'), '-o', out]).code, 0);
  assert.ok(existsSync(path.join(root, 'genai-out', 'model.onnx.data')));
  const session = await ort.InferenceSession.create(out);
  assert.ok(session.inputNames.includes('input_ids'));
  await session.release();
  assert.equal(runCli(['strip', out, '--in-place']).code, 0);
  assert.ok(sameBytes(read(out), read(path.join(src, 'model.onnx'))));
});

/** Writes a model whose one external tensor uses `location` (and extra keys), with a 64-byte data file. */
function badModel(dir: string, location: string, options: { offset?: number; length?: number; extraKey?: string } = {}): string {
  mkdirSync(dir, { recursive: true });
  const model: Model = buildTinyGpt({ vocab: 4, dim: 4, maxPositions: 4 });
  const wte = model.graph.initializer('transformer.wte.weight')!;
  const t = Tensor.external('float', [4, 4], { location, offset: options.offset ?? 0, length: options.length ?? 64 }, wte.name);
  if (options.extraKey) t.proto.external_data!.push({ key: options.extraKey, value: 'x' });
  wte.initializer = t;
  const file = path.join(dir, 'model.onnx');
  writeFileSync(file, encodeModel(model));
  return file;
}

test('each unsafe external-data reference is rejected before any data file is opened', () => {
  const outside = path.join(root, 'outside.bin');
  writeFileSync(outside, new Uint8Array(64));
  const cases: Array<[string, () => string, RegExp]> = [
    ['empty location', () => badModel(path.join(root, 't-empty'), ''), /location is empty/],
    ['absolute path', () => badModel(path.join(root, 't-abs'), outside), /is absolute/],
    ['parent folder', () => badModel(path.join(root, 't-dotdot'), '../outside.bin'), /leaves the model's folder/],
    ['hidden parent folder', () => badModel(path.join(root, 't-dotdot2'), 'sub/../../outside.bin'), /leaves the model's folder/],
    ['symlink outside', () => {
      const f = badModel(path.join(root, 't-link'), 'weights.bin');
      symlinkSync(outside, path.join(root, 't-link', 'weights.bin'));
      return f;
    }, /resolves to .* outside the model's folder/],
    ['hard link', () => {
      const f = badModel(path.join(root, 't-hard'), 'weights.bin');
      writeFileSync(path.join(root, 't-hard', 'weights.bin'), new Uint8Array(64));
      linkSync(path.join(root, 't-hard', 'weights.bin'), path.join(root, 't-hard', 'alias.bin'));
      return f;
    }, /2 hard links/],
    ['offset + length past the end', () => {
      const f = badModel(path.join(root, 't-bounds'), 'weights.bin', { offset: 32, length: 64 });
      writeFileSync(path.join(root, 't-bounds', 'weights.bin'), new Uint8Array(64));
      return f;
    }, /offset 32 \+ length 64 = 96 is beyond the file's 64 bytes/],
    ['unknown key', () => badModel(path.join(root, 't-key'), 'weights.bin', { extraKey: 'evil' }), /unknown external_data key "evil"/],
  ];
  for (const [label, make, message] of cases) {
    const file = make();
    for (const command of [['inspect', file], ['patch', file, '-o', path.join(path.dirname(file), 'out.onnx')]]) {
      const r = runCliJson(command);
      assert.equal(r.code, 4, `${label}: ${command[0]}`);
      assert.equal(r.json.files[0].error.code, 'EXTERNAL_DATA', label);
      assert.match(r.json.files[0].error.message, message, label);
    }
  }
});

test('a missing data file does not stop inspect, patch or strip; inspect reports it', () => {
  const file = badModel(path.join(root, 'missing'), 'weights.bin');
  const inspect = runCliJson(['inspect', file]);
  assert.equal(inspect.code, 0);
  assert.deepEqual(inspect.json.files[0].model.externalData, [{ location: 'weights.bin', present: false, bytes: null, tensors: 1 }]);
  assert.match(runCli(['inspect', file]).stdout, /weights\.bin\s+MISSING/);
  const out = path.join(root, 'missing', 'patched.onnx');
  assert.equal(runCli(['patch', file, '-o', out]).code, 0);
  assert.equal(runCli(['strip', out, '--in-place']).code, 0);
  assert.ok(sameBytes(read(out), read(file)));
});

test('a model over 2 GiB as one file is refused with advice to keep external data', () => {
  const model = buildTinyGpt();
  // A payload that claims 3 GiB (the check runs before anything is encoded or allocated).
  model.graph.initializer('transformer.wte.weight')!.initializer!.proto.raw_data = { length: 3 * 2 ** 30 } as Uint8Array;
  assert.throws(() => encodeCheckedBytes(model), (e: unknown) => e instanceof ModelTooLargeError && /external data/.test(e.message) && /2 GiB/.test(e.message));
});

test('killing the CLI in the middle of a large write leaves the destination intact', async () => {
  const dir = path.join(root, 'kill');
  mkdirSync(dir);
  // ~200 MB of weights inline, so the write takes long enough to be interrupted.
  const model = buildTinyGpt({ vocab: 200_000, dim: 256, maxPositions: 8 });
  const input = path.join(dir, 'big.onnx');
  writeFileSync(input, encodeModel(model));
  const dest = path.join(dir, 'dest.onnx');
  const previous = new TextEncoder().encode('previous contents of the destination');
  for (const signal of ['SIGKILL', 'SIGTERM'] as const) {
    writeFileSync(dest, previous);
    const child = spawn(process.execPath, [cliPath, 'patch', input, '-o', dest], { stdio: 'ignore' });
    const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
    // Wait for the temp file to appear in the destination folder, then kill.
    const started = Date.now();
    let sawTemp = false;
    while (Date.now() - started < 60_000) {
      if (readdirSync(dir).some((f) => f.startsWith(`.dest.onnx.${child.pid}.`))) { sawTemp = true; break; }
      if (child.exitCode !== null) break;
      await new Promise((r) => setTimeout(r, 1));
    }
    child.kill(signal);
    await exited;
    const own = `.dest.onnx.${child.pid}.`;
    const now = read(dest);
    const untouched = sameBytes(now, previous);
    const complete = !untouched && isPatched(decodeModel(now));
    assert.ok(untouched || complete, `${signal}: destination is either as it was or complete`);
    assert.ok(sawTemp, `${signal}: the write was caught in progress`);
    assert.ok(untouched, `${signal}: killed mid-write, the destination keeps its old contents`);
    if (signal === 'SIGTERM') assert.deepEqual(readdirSync(dir).filter((f) => f.startsWith(own)), [], 'SIGTERM cleans up its temp file');
  }
});
