/**
 * Security audit items on external data and stdin (issue 16): files swapped between the check and
 * the read, external tensors in every place a tensor can sit, checks per data file, and stdin read
 * with validation as it arrives.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs, { closeSync, constants, copyFileSync, mkdirSync, openSync, readFileSync, readSync, renameSync, writeFileSync, writeSync } from 'node:fs';
import { syncBuiltinESMExports } from 'node:module';
import { spawnSync } from 'node:child_process';
import { Readable } from 'node:stream';
import { pathToFileURL } from 'node:url';
import path from 'node:path';
import {
  OnnxDecodeError, Tensor, decodeModel, decodeModelProto, encodeModel, encodeModelProto,
  type AttributeProto, type GraphProto, type ModelProto, type NodeProto, type SparseTensorProto, type TensorProto,
} from '../../src/graph/index.js';
import { ExternalDataError, ModelTooLargeError, checkExternalData, openExternalDataFile, readModelFile, saveWithExternalData } from '../../src/io/index.js';
import { readModelStream } from '../../src/io/stream-read.js';
import { applyNeftune } from '../../src/passes/index.js';
import { buildTinyGpt } from '../../examples/models.js';
import { runCliJson, spawn, tempDir } from '../cli-helpers.js';
import { projectRoot, sameBytes } from '../helpers.js';

const root = tempDir('io-external');
const distIndex = pathToFileURL(path.join(projectRoot, 'dist', 'src', 'node.js')).href;
const distStreamRead = pathToFileURL(path.join(projectRoot, 'dist', 'src', 'io', 'stream-read.js')).href;

// ------------------------------------------------------------ 1. swapped between check and read

/**
 * Loads a model (which checks its external data), applies file operations, then runs verify's read
 * path, in a child process: reading a FIFO by path would block that process, not the test runner.
 */
const swapScript = path.join(root, 'swap-and-verify.mjs');
writeFileSync(swapScript, `
import { readModelFile, verifyLoadedModel, loadRuntime } from ${JSON.stringify(distIndex)};
import { renameSync, symlinkSync, unlinkSync } from 'node:fs';
const [modelFile, ops] = process.argv.slice(2);
const loaded = readModelFile(modelFile);
for (const [op, a, b] of JSON.parse(ops)) {
  if (op === 'rename') renameSync(a, b);
  else if (op === 'symlink') symlinkSync(a, b);
  else if (op === 'unlink') unlinkSync(a);
}
try {
  const report = await verifyLoadedModel(loaded, await loadRuntime('cpu'), { runs: 2 });
  console.log(JSON.stringify({ ok: report.ok }));
} catch (e) {
  console.log(JSON.stringify({ name: e.name, code: e.code, message: e.message }));
}
`);

type Op = ['rename' | 'symlink', string, string] | ['unlink', string];

function swapThenVerify(model: string, ops: Op[]): { ok?: boolean; name?: string; code?: string; message?: string } {
  const r = spawnSync(process.execPath, [swapScript, model, JSON.stringify(ops)], { encoding: 'utf8', timeout: 60_000 });
  assert.equal(r.signal, null, `the read path hung (killed by ${r.signal}); stderr: ${r.stderr}`);
  assert.equal(r.status, 0, r.stderr);
  return JSON.parse(r.stdout.trim().split('\n').pop()!);
}

/** A patched tiny GPT in `dir` with its weights in external data at `location`. */
async function patchedWithData(dir: string, location = 'weights.bin'): Promise<{ file: string; data: string }> {
  mkdirSync(dir, { recursive: true });
  const model = buildTinyGpt({ vocab: 64, dim: 16, maxPositions: 8 });
  applyNeftune(model, { seed: 1 });
  const file = path.join(dir, 'model.onnx');
  await saveWithExternalData(model, file, { location, threshold: 256 });
  return { file, data: path.join(dir, location) };
}

/** A FIFO holding `text`, kept open for reading and writing by this process (never blocks). */
function fifoHolding(fifo: string, text: string): number {
  const r = spawnSync('mkfifo', [fifo]);
  assert.equal(r.status, 0, `mkfifo: ${r.stderr}`);
  const fd = openSync(fifo, constants.O_RDWR | constants.O_NONBLOCK);
  writeSync(fd, text);
  return fd;
}

/** What is still unread in the FIFO (nothing consumed means nobody read it). */
function unreadIn(fd: number): string {
  const buf = Buffer.alloc(256);
  try { return buf.subarray(0, readSync(fd, buf)).toString(); } catch { return ''; } finally { closeSync(fd); }
}

const refusedAs = (result: { code?: string; message?: string }, pattern: RegExp, label: string) => {
  assert.equal(result.code, 'EXTERNAL_DATA', `${label}: ${JSON.stringify(result)}`);
  assert.match(result.message!, pattern, label);
  assert.match(result.message!, /External data "(sub\/)?weights\.bin"/, `${label}: names the file`);
};

test('verify reads data files that are unchanged since the check, also through an allowed symlink', { timeout: 120_000 }, async () => {
  const plain = await patchedWithData(path.join(root, 'swap-control'));
  assert.deepEqual(swapThenVerify(plain.file, []), { ok: true });
  const linked = await patchedWithData(path.join(root, 'swap-control-link'), 'link.bin');
  renameSync(linked.data, path.join(root, 'swap-control-link', 'real.bin'));
  fs.symlinkSync('real.bin', linked.data);
  assert.deepEqual(swapThenVerify(linked.file, []), { ok: true });
});

test('a data file swapped for a symlink to a FIFO outside the folder is refused, nothing read, no hang', { timeout: 120_000 }, async () => {
  const { file, data } = await patchedWithData(path.join(root, 'swap-fifo-link'));
  const fifo = path.join(root, 'outside.fifo');
  const fd = fifoHolding(fifo, 'SECRET');
  const result = swapThenVerify(file, [['unlink', data], ['symlink', fifo, data]]);
  refusedAs(result, /is now a symbolic link/, 'symlink to FIFO');
  assert.equal(unreadIn(fd), 'SECRET', 'nothing was read from the FIFO');
});

test('a data file replaced by a FIFO in place is refused without blocking, nothing read', { timeout: 120_000 }, async () => {
  const dir = path.join(root, 'swap-fifo');
  const { file, data } = await patchedWithData(dir);
  const staged = path.join(dir, 'staged.fifo');
  const fd = fifoHolding(staged, 'SECRET');
  const result = swapThenVerify(file, [['rename', staged, data]]);
  refusedAs(result, /no longer a regular file/, 'FIFO in place');
  assert.equal(unreadIn(fd), 'SECRET', 'nothing was read from the FIFO');
});

test('a data file swapped for a symlink to a file outside the folder is refused', { timeout: 120_000 }, async () => {
  const { file, data } = await patchedWithData(path.join(root, 'swap-outside'));
  const outside = path.join(root, 'outside-copy.bin');
  copyFileSync(data, outside); // same size and bytes: only where the file is gives it away
  refusedAs(swapThenVerify(file, [['unlink', data], ['symlink', outside, data]]), /is now a symbolic link/, 'symlink outside');
});

test('a data file replaced by another regular file is refused (device and inode recorded at the check)', { timeout: 120_000 }, async () => {
  const dir = path.join(root, 'swap-other');
  const { file, data } = await patchedWithData(dir);
  const other = path.join(dir, 'other.bin');
  copyFileSync(data, other);
  refusedAs(swapThenVerify(file, [['rename', other, data]]), /is another file \(device \d+, inode \d+; checked/, 'another file');
});

test('a parent folder swapped for a symlink elsewhere is refused: another file, or the same file moved outside', { timeout: 120_000 }, async () => {
  const dir = path.join(root, 'swap-parent');
  const { file, data } = await patchedWithData(dir, 'sub/weights.bin');
  const elsewhere = path.join(root, 'elsewhere', 'sub');
  mkdirSync(elsewhere, { recursive: true });
  copyFileSync(data, path.join(elsewhere, 'weights.bin'));
  refusedAs(swapThenVerify(file, [['rename', path.join(dir, 'sub'), path.join(dir, 'sub.old')], ['symlink', elsewhere, path.join(dir, 'sub')]]),
    /is another file/, 'folder link to a copy');

  // The very file that was checked, moved out of the model's folder and linked back in.
  const dir2 = path.join(root, 'swap-parent-moved');
  const moved = await patchedWithData(dir2, 'sub/weights.bin');
  const away = path.join(root, 'moved-away');
  refusedAs(swapThenVerify(moved.file, [['rename', path.join(dir2, 'sub'), away], ['symlink', away, path.join(dir2, 'sub')]]),
    /now resolves to .*moved-away.*, outside the model's folder/, 'same file moved outside');
});

test('openExternalDataFile refuses a file that was missing at the check', async () => {
  const { file, data } = await patchedWithData(path.join(root, 'missing-then-present'));
  const bytes = readFileSync(data);
  fs.unlinkSync(data);
  const loaded = readModelFile(file);
  writeFileSync(data, bytes);
  assert.throws(() => openExternalDataFile(loaded.externalData[0]!), (e: unknown) => e instanceof ExternalDataError && /was missing when the model was loaded/.test(e.message));
});

// ------------------------------------------------------------ 2. every tensor reference

const external = (location: string, name: string): TensorProto => Tensor.external('float', [4], { location, offset: 0, length: 16 }, name).proto;
const inlineValues = (name: string): TensorProto => ({ name, dims: [4], data_type: 1, float_data: [1, 2, 3, 4] });
const inlineIndices = (): TensorProto => ({ dims: [4], data_type: 7, int64_data: [0, 1, 2, 3] });
const sparse = (values: TensorProto, indices: TensorProto): SparseTensorProto => ({ values, indices, dims: [4] });
const constant = (output: string, attribute: AttributeProto): NodeProto => ({ op_type: 'Constant', name: `const_${output}`, output: [output], attribute: [attribute] });
const body = (name: string, node: NodeProto, output: string): GraphProto => ({ name, node: [node], output: [{ name: output }] });
const ifNode = (name: string, then: GraphProto, otherwise: GraphProto = then): NodeProto => ({
  op_type: 'If', name, input: ['cond'], output: [`${name}_out`],
  attribute: [{ name: 'then_branch', type: 5, g: then }, { name: 'else_branch', type: 5, g: otherwise }],
});

/** The tiny GPT as a ModelProto, with `edit` applied; written to dir/model.onnx. */
function editedModel(dir: string, edit: (p: ModelProto) => void): string {
  mkdirSync(dir, { recursive: true });
  const proto = decodeModelProto(encodeModel(buildTinyGpt({ vocab: 16, dim: 4, maxPositions: 4 })));
  edit(proto);
  const file = path.join(dir, 'model.onnx');
  writeFileSync(file, encodeModelProto(proto));
  return file;
}

const hostilePlaces: Array<[string, string, string, (p: ModelProto) => void]> = [
  ['a sparse initializer (values)', 'sparse_values', '/etc/passwd', (p) => { p.graph!.sparse_initializer = [sparse(external('/etc/passwd', 'sparse_values'), inlineIndices())]; }],
  ['a sparse initializer (indices)', 'sparse_with_bad_indices', '../secret', (p) => { p.graph!.sparse_initializer = [sparse(inlineValues('sparse_with_bad_indices'), external('../secret', 'idx'))]; }],
  ['a sparse_tensor attribute', 'attr_sparse', '/etc/passwd', (p) => { p.graph!.node!.push(constant('h1', { name: 'sparse_value', type: 11, sparse_tensor: sparse(external('/etc/passwd', 'attr_sparse'), inlineIndices()) })); }],
  ['a sparse_tensors attribute', 'attr_sparse_list', '../secret', (p) => { p.graph!.node!.push(constant('h2', { name: 'sparse_values', type: 12, sparse_tensors: [sparse(inlineValues('attr_sparse_list'), external('../secret', 'idx2'))] })); }],
  ['a t attribute in an If body', 'if_then_t', '/etc/passwd', (p) => { p.graph!.node!.push(ifNode('if_a', body('then', constant('c', { name: 'value', type: 4, t: external('/etc/passwd', 'if_then_t') }), 'c'))); }],
  ['a tensors attribute in an If body', 'if_tensors', '../secret', (p) => { p.graph!.node!.push(ifNode('if_b', body('then', constant('c', { name: 'values', type: 9, tensors: [external('../secret', 'if_tensors')] }), 'c'))); }],
  ['a sparse_tensor attribute in an If body', 'if_sparse', '/etc/passwd', (p) => { p.graph!.node!.push(ifNode('if_c', body('then', constant('c', { name: 'sparse_value', type: 11, sparse_tensor: sparse(external('/etc/passwd', 'if_sparse'), inlineIndices()) }), 'c'))); }],
  ['a t attribute in a Loop body inside an If body', 'nested_t', '../secret', (p) => {
    const loop: NodeProto = { op_type: 'Loop', name: 'loop', input: ['', 'cond'], output: ['loop_out'], attribute: [{ name: 'body', type: 5, g: body('loop_body', constant('lc', { name: 'value', type: 4, t: external('../secret', 'nested_t') }), 'lc') }] };
    p.graph!.node!.push(ifNode('if_d', body('then', loop, 'loop_out')));
  }],
  ['a t attribute in a function', 'fn_t', '/etc/passwd', (p) => { p.functions = [{ name: 'f', domain: 'local', output: ['c'], node: [constant('c', { name: 'value', type: 4, t: external('/etc/passwd', 'fn_t') })] }]; }],
  ['a sparse_tensor attribute in an If body in a function', 'fn_if_sparse', '../secret', (p) => {
    p.functions = [{ name: 'g', domain: 'local', input: ['cond'], output: ['fif_out'], node: [ifNode('fif', body('then', constant('c', { name: 'sparse_value', type: 11, sparse_tensor: sparse(inlineValues('fn_if_sparse'), external('../secret', 'i3')) }), 'c'))] }];
  }],
  ['an attribute default of a function', 'fn_default', '/etc/passwd', (p) => { p.functions = [{ name: 'h', domain: 'local', output: [], node: [], attribute_proto: [{ name: 'value', type: 4, t: external('/etc/passwd', 'fn_default') }] }]; }],
  ['an initializer of a training graph', 'train_init', '../secret', (p) => { p.training_info = [{ initialization: { name: 'init', initializer: [external('../secret', 'train_init')] } }]; }],
];

for (const [label, tensor, location, edit] of hostilePlaces) {
  test(`"${location}" in ${label} is refused: inspect and patch exit 4, tensor named`, { timeout: 60_000 }, () => {
    const file = editedModel(path.join(root, 'places', tensor), edit);
    for (const command of [['inspect', file], ['patch', file, '-o', path.join(path.dirname(file), 'out.onnx')]]) {
      const r = runCliJson(command);
      assert.equal(r.code, 4, `${command[0]} exit code; ${r.stdout}`);
      const error = r.json.files[0].error;
      assert.equal(error.code, 'EXTERNAL_DATA');
      assert.ok(error.message.includes(`Tensor "${tensor}"`), `names the tensor: ${error.message}`);
      assert.ok(error.message.includes(`"${location}"`), `names the location: ${error.message}`);
    }
  });
}

test('a location whose `..` normalising would cancel is refused too (a linked folder resolves first)', () => {
  const file = editedModel(path.join(root, 'dotdot-cancelled'), (p) => { p.graph!.sparse_initializer = [sparse(external('sub/../w.bin', 'cancelled'), inlineIndices())]; });
  const r = runCliJson(['inspect', file]);
  assert.equal(r.code, 4);
  assert.match(r.json.files[0].error.message, /Tensor "cancelled".*leaves the model's folder/);
});

test('a benign external sparse tensor is accepted and listed', () => {
  const dir = path.join(root, 'benign-sparse');
  const file = editedModel(dir, (p) => {
    p.graph!.sparse_initializer = [sparse(external('sparse.bin', 'benign_sparse'), inlineIndices())];
    p.graph!.node!.push(constant('bs', { name: 'sparse_value', type: 11, sparse_tensor: sparse(inlineValues('benign_attr'), { ...external('./sparse.bin', 'bi'), data_type: 7, dims: [2] }) }));
  });
  writeFileSync(path.join(dir, 'sparse.bin'), new Uint8Array(16));
  const inspect = runCliJson(['inspect', file]);
  assert.equal(inspect.code, 0, inspect.stdout);
  assert.deepEqual(inspect.json.files[0].model.externalData, [{ location: 'sparse.bin', present: true, bytes: 16, tensors: 2 }]);
  const patch = runCliJson(['patch', file, '-o', path.join(dir, 'patched.onnx')]);
  assert.equal(patch.code, 0, patch.stdout);
});

// ------------------------------------------------------------ 3. per file, not per tensor

/** Counts calls of the file-status functions while `fn` runs (the real functions still do the work). */
function countFileChecks<T>(fn: () => T): { result: T; calls: Record<string, number> } {
  const names = ['lstatSync', 'statSync', 'realpathSync'] as const;
  const calls: Record<string, number> = {};
  const mutable = fs as unknown as Record<string, (...args: unknown[]) => unknown>;
  const originals = names.map((n) => mutable[n]!);
  names.forEach((n, i) => {
    calls[n] = 0;
    const original = originals[i]!;
    mutable[n] = Object.assign(function (this: unknown, ...args: unknown[]) { calls[n]!++; return original.apply(this, args); }, original);
  });
  syncBuiltinESMExports();
  try {
    return { result: fn(), calls };
  } finally {
    names.forEach((n, i) => { mutable[n] = originals[i]!; });
    syncBuiltinESMExports();
  }
}

test('10,000 tensors in one data file: one lstat for the file (a regular file in the real folder); bounds still per tensor', () => {
  const dir = path.join(root, 'many');
  const count = 10_000;
  const tensors = (bad?: number) => Array.from({ length: count }, (_, i) =>
    Tensor.external('float', [1], { location: i % 2 ? 'w.bin' : './w.bin', offset: i === bad ? count * 4 : i * 4, length: 4 }, `w${i}`).proto);
  const file = editedModel(dir, (p) => { p.graph!.initializer!.push(...tensors()); });
  writeFileSync(path.join(dir, 'w.bin'), new Uint8Array(count * 4));
  const model = decodeModel(readFileSync(file));
  const { result, calls } = countFileChecks(() => checkExternalData(model, dir));
  assert.equal(result.length, 1);
  assert.equal(result[0]!.tensors.length, count);
  assert.deepEqual(calls, { lstatSync: 1, statSync: 0, realpathSync: 1 }, 'realpath: the model folder only');

  const bad = editedModel(path.join(dir, 'bad'), (p) => { p.graph!.initializer!.push(...tensors(7777)); });
  writeFileSync(path.join(dir, 'bad', 'w.bin'), new Uint8Array(count * 4));
  assert.throws(() => checkExternalData(decodeModel(readFileSync(bad)), path.join(dir, 'bad')),
    (e: unknown) => e instanceof ExternalDataError && /Tensor "w7777".*offset 40000 \+ length 4 = 40004 is beyond the file's 40000 bytes/.test(e.message));
});

// ------------------------------------------------------------ 4. stdin validated as it arrives

const CHUNK = 64 * 1024;

/** An endless stream of zero chunks that counts what was taken and whether it was closed. */
function endless(first?: Uint8Array) {
  const state = { chunks: 0, closed: false };
  async function* gen() {
    try {
      if (first) { state.chunks++; yield first; }
      for (;;) { state.chunks++; yield new Uint8Array(CHUNK); }
    } finally { state.closed = true; }
  }
  return { state, stream: gen() };
}

test('an endless stream of zeros fails at byte 0 after one chunk, and reading stops', { timeout: 30_000 }, async () => {
  const { state, stream } = endless();
  await assert.rejects(readModelStream(stream), (e: unknown) => e instanceof OnnxDecodeError && e.path === 'ModelProto' && e.offset === 0 && /field number 0/.test(e.message));
  assert.equal(state.chunks, 1);
  assert.ok(state.closed, 'the stream was closed');
});

test('a bad field after valid ones fails at its offset, even across chunk boundaries', { timeout: 30_000 }, async () => {
  const model = encodeModel(buildTinyGpt({ vocab: 16, dim: 4, maxPositions: 4 }));
  const bad = new Uint8Array(model.length + 3);
  bad.set(model);
  bad.set([0xff, 0x87, 0x01], model.length); // a three-byte tag with wire type 7 (may straddle the 5-byte chunks below)
  const { state, stream } = endless();
  async function* prefixed() { for (let i = 0; i < bad.length; i += 5) yield bad.subarray(i, i + 5); yield* stream; }
  await assert.rejects(readModelStream(prefixed()), (e: unknown) => e instanceof OnnxDecodeError && e.offset === model.length && /invalid wire type 7/.test(e.message));
  assert.equal(state.chunks, 0, 'nothing read past the bad field');
});

test('a valid model streamed in odd chunk sizes comes back byte for byte', { timeout: 60_000 }, async () => {
  const small = encodeModel(buildTinyGpt({ vocab: 16, dim: 4, maxPositions: 4 }));
  const large = encodeModel(buildTinyGpt({ vocab: 2048, dim: 64, maxPositions: 16 }));
  for (const [bytes, size] of [[small, 1], [small, 7], [large, 7], [large, 64 * 1024], [large, large.length]] as const) {
    async function* chunks() { for (let i = 0; i < bytes.length; i += size) yield bytes.slice(i, i + size); }
    const back = await readModelStream(chunks());
    assert.ok(sameBytes(back, bytes), `chunks of ${size} bytes (${bytes.length} in all)`);
  }
  // A truncated model fails at the field that runs past the end.
  async function* truncated() { yield large.subarray(0, large.length - 10); }
  await assert.rejects(readModelStream(truncated()), (e: unknown) => e instanceof OnnxDecodeError && /claims \d+ bytes but only \d+ remain/.test(e.message));
});

test('a field claiming 3 GiB is refused at once, without waiting for its bytes', { timeout: 30_000 }, async () => {
  const header = Uint8Array.from([0x08, 0x08, 0x3a, ...varint(3 * 2 ** 30)]); // ir_version 8, graph of 3 GiB
  const { state, stream } = endless(header);
  await assert.rejects(readModelStream(stream), (e: unknown) => e instanceof ModelTooLargeError && /field graph at byte offset 2 claims 3221225472 bytes/i.test(e.message));
  assert.equal(state.chunks, 1);
  assert.ok(state.closed);
  // More bytes in all than maxBytes: refused at the chunk that crosses the limit.
  const model = encodeModel(buildTinyGpt({ vocab: 16, dim: 4, maxPositions: 4 }));
  await assert.rejects(readModelStream(Readable.from([model]), { maxBytes: model.length - 1 }), ModelTooLargeError);
  assert.equal((await readModelStream(Readable.from([model]), { maxBytes: model.length })).length, model.length);
});

function varint(value: number): number[] {
  const out: number[] = [];
  while (value >= 0x80) { out.push((value % 128) | 0x80); value = Math.floor(value / 128); }
  out.push(value);
  return out;
}

test('1 GiB of zeros piped into readModelStream(process.stdin): typed failure at byte 0, low peak memory', { timeout: 120_000 }, async () => {
  const script = path.join(root, 'read-stdin.mjs');
  writeFileSync(script, `
import { readModelStream } from ${JSON.stringify(distStreamRead)};
let result;
try { await readModelStream(process.stdin); result = { ok: true }; }
catch (e) { result = { code: e.code, offset: e.offset, message: e.message }; }
console.log(JSON.stringify({ ...result, maxRSS: process.resourceUsage().maxRSS * 1024 }));
process.exit(0);
`);
  const child = spawn(process.execPath, [script], { stdio: ['pipe', 'pipe', 'inherit'] });
  let out = '';
  child.stdout!.on('data', (d: Buffer) => { out += d; });
  const exited = new Promise<number | null>((resolve) => child.on('exit', resolve));
  child.stdin!.on('error', () => { /* EPIPE once the child has stopped reading */ });
  const zeros = Buffer.alloc(1 << 20);
  Readable.from((function* () { for (let i = 0; i < 1024; i++) yield zeros; })()).pipe(child.stdin!);
  assert.equal(await exited, 0);
  const result = JSON.parse(out);
  assert.equal(result.code, 'ONNX_DECODE', out);
  assert.equal(result.offset, 0);
  assert.ok(result.maxRSS < 300e6, `peak RSS ${(result.maxRSS / 1e6).toFixed(0)} MB`);
});

test('a data file swapped for a link to a secret between load and save is not copied into the output folder', { timeout: 60_000 }, async () => {
  const { saveModelFile } = await import('../../src/io/index.js');
  const dir = path.join(root, 'swap-before-copy');
  const { file, data } = await patchedWithData(dir);
  const loaded = readModelFile(file);
  const secret = path.join(root, 'secret.txt');
  writeFileSync(secret, 'SECRET'.repeat(1000));
  fs.unlinkSync(data);
  fs.symlinkSync(secret, data);
  const out = path.join(root, 'swap-before-copy-out');
  await assert.rejects(saveModelFile(loaded, path.join(out, 'model.onnx')), (e: Error) => e instanceof ExternalDataError && /is now a symbolic link/.test(e.message));
  assert.ok(!fs.existsSync(path.join(out, 'weights.bin')), 'the secret was not copied');
  assert.ok(!fs.existsSync(path.join(out, 'model.onnx')), 'nothing written');
  loaded.close();
});
