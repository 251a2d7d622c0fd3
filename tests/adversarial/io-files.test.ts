/**
 * Files on disk under attack or bad luck (audit issue 16): inputs replaced or changed between load
 * and save, outputs that are data files, special files as models, impossible protobuf fields,
 * symbolic links, failing writes, stale temp files, and data copies led astray by links.
 */
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import {
  closeSync, existsSync, lstatSync, mkdirSync, openSync, readdirSync, readFileSync, readlinkSync, renameSync,
  mkdtempSync, rmSync, symlinkSync, truncateSync, utimesSync, lutimesSync, writeFileSync, writeSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { OnnxDecodeError, decodeModel, encodeModel, type Model } from '../../src/graph/index.js';
import { deferredPayloadOf } from '../../src/graph/deferred.js';
import { encodeVarint } from '../../src/graph/varint.js';
import { applyNeftune, isPatched } from '../../src/passes/index.js';
import {
  FileAccessError, InputChangedError, ModelTooLargeError, OutputWriteError, RefusedError, readCompact, readModelFile, saveModelFile,
  saveWithExternalData, type LoadedModel,
} from '../../src/io/index.js';
import { buildTinyGpt } from '../../examples/models.js';
import { runCli, runCliJson, tempDir } from '../cli-helpers.js';
import { projectRoot, sameBytes } from '../helpers.js';

const root = tempDir('io-adversarial');
const read = (p: string) => new Uint8Array(readFileSync(p));
let serial = 0;
const fresh = (label: string) => { const d = path.join(root, `${label}-${serial++}`); mkdirSync(d, { recursive: true }); return d; };
const gptBytes = () => encodeModel(buildTinyGpt({ vocab: 4096, dim: 64 }));
const LAZY = { deferThreshold: 1024 };
const pause = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** What an edit of the file's model gives on the in-memory path (the reference for the streaming save). */
function expectedAfter(bytes: Uint8Array, edit: (m: Model) => void): Uint8Array {
  const model = decodeModel(bytes);
  edit(model);
  return encodeModel(model);
}

/** The same model with every deferred payload's bytes inverted: same size, same structure, other weights. */
function otherWeights(bytes: Uint8Array, loaded: LoadedModel): Uint8Array {
  const out = bytes.slice();
  let inverted = 0;
  for (const v of loaded.model.graph.initializers) {
    const payload = deferredPayloadOf(v.initializer!.proto.raw_data);
    if (!payload) continue;
    for (let i = payload.source.offset; i < payload.source.offset + payload.length; i++) out[i] = ~out[i]! & 0xff;
    inverted++;
  }
  assert.ok(inverted >= 2, 'payloads were deferred');
  return out;
}

/** Descriptors of this process open on `file` (Linux: /proc/self/fd), deleted files included. */
function openDescriptorsOn(file: string): number {
  let n = 0;
  for (const fd of readdirSync('/proc/self/fd')) {
    try { if (readlinkSync(`/proc/self/fd/${fd}`).replace(/ \(deleted\)$/, '') === file) n++; } catch { /* closed meanwhile */ }
  }
  return n;
}

/** Bytes this process has read so far (Linux: /proc/self/io), to see how much of a file a read touched. */
const bytesReadSoFar = () => Number(/rchar: (\d+)/.exec(readFileSync('/proc/self/io', 'utf8'))![1]);

const tempFilesIn = (dir: string) => readdirSync(dir).filter((f) => f.endsWith('.tmp'));

async function rejectsWith<T extends Error>(promise: Promise<unknown>, type: new (...args: never[]) => T, message: RegExp): Promise<T> {
  try { await promise; } catch (error) {
    assert.ok(error instanceof type, `expected ${type.name}, got ${(error as Error).stack}`);
    assert.match(error.message, message);
    return error;
  }
  return assert.fail(`expected ${type.name}, but it succeeded`);
}

function throwsWith<T extends Error>(fn: () => unknown, type: new (...args: never[]) => T, message: RegExp): T {
  try { fn(); } catch (error) {
    assert.ok(error instanceof type, `expected ${type.name}, got ${(error as Error).stack}`);
    assert.match(error.message, message);
    return error;
  }
  return assert.fail(`expected ${type.name}, but it succeeded`);
}

// 1. The input is held open from load to save.

test('input replaced by rename after loading: the output still has the loaded file\'s weights', async () => {
  const dir = fresh('replaced');
  const file = path.join(dir, 'model.onnx');
  const original = gptBytes();
  writeFileSync(file, original);
  const loaded = readModelFile(file, LAZY);
  applyNeftune(loaded.model, { seed: 1 });
  // Another writer renames a new file (same size and layout, other weights) over the input.
  writeFileSync(`${file}.new`, otherWeights(original, loaded));
  renameSync(`${file}.new`, file);
  const out = path.join(dir, 'out.onnx');
  await saveModelFile(loaded, out);
  assert.ok(sameBytes(read(out), expectedAfter(original, (m) => { applyNeftune(m, { seed: 1 }); })), 'payloads came from the held descriptor');
  // Saving in place would discard the other writer's file: refused, that file untouched.
  const theirs = read(file);
  await rejectsWith(saveModelFile(loaded, file, { inPlace: true }), InputChangedError, /replaced by another file since it was loaded/);
  assert.ok(sameBytes(read(file), theirs));
  assert.deepEqual(tempFilesIn(dir), []);
  loaded.close();
});

test('input modified in place after loading: typed error naming the file, destination untouched', async () => {
  const dir = fresh('modified');
  const file = path.join(dir, 'model.onnx');
  const original = gptBytes();
  const out = path.join(dir, 'out.onnx');
  for (const change of ['truncate', 'overwrite'] as const) {
    writeFileSync(file, original);
    writeFileSync(out, 'previous output');
    const loaded = readModelFile(file, LAZY);
    const offset = deferredPayloadOf(loaded.model.graph.initializer('transformer.wte.weight')!.initializer!.proto.raw_data)!.source.offset;
    await pause(20); // a later modification time than the load's, on file systems with coarse clocks
    if (change === 'truncate') truncateSync(file, offset + 100);
    else { const fd = openSync(file, 'r+'); writeSync(fd, new Uint8Array(4096).fill(7), 0, 4096, offset); closeSync(fd); }
    const error = await rejectsWith(saveModelFile(loaded, out), InputChangedError, /changed since it was loaded/);
    assert.ok(error.message.includes(file), error.message);
    assert.equal(readFileSync(out, 'utf8'), 'previous output', `${change}: destination untouched`);
    await rejectsWith(saveModelFile(loaded, file, { inPlace: true }), InputChangedError, /changed since it was loaded/);
    assert.deepEqual(tempFilesIn(dir), [], `${change}: temp file removed`);
    loaded.close();
  }
});

test('close() releases the held file, also after an in-place save replaced it, and is safe twice', async () => {
  const dir = fresh('close');
  const file = path.join(dir, 'model.onnx');
  const original = gptBytes();
  writeFileSync(file, original);
  const loaded = readModelFile(file, LAZY);
  assert.equal(openDescriptorsOn(file), 1, 'the loaded model holds its file open');
  applyNeftune(loaded.model, { alphaInput: true });
  await saveModelFile(loaded, file, { inPlace: true });
  assert.equal(openDescriptorsOn(file), 1, 'the replaced file was released; the new one is held');
  assert.ok(sameBytes(encodeModel(loaded.model), read(file)), 'payloads re-pointed to the new file');
  loaded.close();
  loaded.close();
  assert.equal(openDescriptorsOn(file), 0);
  await rejectsWith(saveModelFile(loaded, path.join(dir, 'after-close.onnx')), FileAccessError, /was closed/);
  assert.ok(!existsSync(path.join(dir, 'after-close.onnx')));
});

// 2. The output is never a data file the model reads.

async function externalModel(dir: string, location = 'model.onnx.data'): Promise<{ file: string; data: string }> {
  mkdirSync(dir, { recursive: true });
  const file = path.join(dir, 'model.onnx');
  await saveWithExternalData(buildTinyGpt({ vocab: 128, dim: 32 }), file, { threshold: 256, location });
  return { file, data: path.join(dir, location) };
}

test('saving over an external data file the model reads is refused, however the path is spelled', async () => {
  const dir = fresh('data-dest');
  const { file, data } = await externalModel(dir);
  symlinkSync('model.onnx.data', path.join(dir, 'alias.bin'));
  symlinkSync('.', path.join(dir, 'same-folder'));
  const before = read(data);
  const loaded = readModelFile(file);
  for (const dest of [data, path.join(dir, 'alias.bin'), path.join(dir, 'same-folder', 'model.onnx.data')]) {
    const error = await rejectsWith(saveModelFile(loaded, dest), RefusedError, /external data file "model\.onnx\.data"/);
    assert.ok(error.message.includes(data), `names the data file: ${error.message}`);
  }
  // Into another folder that does not exist yet: the data is copied to other/model.onnx.data, so the model cannot go there.
  await rejectsWith(saveModelFile(loaded, path.join(root, 'not-yet', 'model.onnx.data')), RefusedError, /the copy of .* the saved model would read/);
  assert.ok(!existsSync(path.join(root, 'not-yet', 'model.onnx.data')));
  assert.ok(sameBytes(read(data), before));
  // The CLI refuses it while planning, before anything is read or written: a usage error.
  const cli = runCliJson(['patch', file, '-o', data]);
  assert.equal(cli.code, 2, cli.stdout);
  assert.equal(cli.json.error.code, 'USAGE');
  assert.ok(sameBytes(read(data), before));
});

// 3. Only regular files of at most 2 GiB are read.

/** Runs readModelFile in a child process (a blocking open cannot stall the test runner), bounded. */
function readInChild(file: string, deferThreshold: number): { status: number | null; out: string } {
  const io = pathToFileURL(path.join(projectRoot, 'dist', 'src', 'io', 'index.js')).href;
  const script = `import { readModelFile } from ${JSON.stringify(io)};
    try { readModelFile(${JSON.stringify(file)}, { deferThreshold: ${deferThreshold === Infinity ? 'Infinity' : deferThreshold} }); console.log('read'); }
    catch (e) { console.log(e.name + ' ' + e.code + ': ' + e.message); }`;
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], { timeout: 15_000, encoding: 'utf8' });
  return { status: r.status, out: r.stdout + r.stderr };
}

test('a FIFO as the model is refused without blocking (library, both read paths, and CLI)', { timeout: 60_000 }, () => {
  const dir = fresh('fifo');
  const fifo = path.join(dir, 'model.onnx');
  const made = spawnSync('mkfifo', [fifo]);
  assert.equal(made.status, 0, 'mkfifo available');
  for (const threshold of [1024, Infinity]) {
    const r = readInChild(fifo, threshold);
    assert.equal(r.status, 0, `did not finish (threshold ${threshold}): ${r.out}`);
    assert.match(r.out, /FileAccessError FILE_ACCESS: .*named pipe \(FIFO\), not a regular file/);
  }
  const cli = spawnSync(process.execPath, [path.join(projectRoot, 'dist', 'cli', 'bin.cjs'), 'inspect', fifo, '--json'], { timeout: 15_000, encoding: 'utf8' });
  // The CLI refuses a path that is not a regular file while planning, before any open: a usage error.
  assert.equal(cli.status, 2, cli.stdout + cli.stderr);
  assert.equal(JSON.parse(cli.stdout).error.code, 'USAGE');
});

test('a directory or a device as the model is refused before reading', () => {
  const dir = fresh('special');
  for (const threshold of [1024, Infinity]) {
    throwsWith(() => readModelFile(dir, { deferThreshold: threshold }), FileAccessError, /is a directory, not a regular file/);
    throwsWith(() => readModelFile('/dev/null', { deferThreshold: threshold }), FileAccessError, /is a device, not a regular file/);
  }
  const cli = runCliJson(['inspect', '/dev/null']);
  assert.equal(cli.code, 2);
  assert.match(cli.json.error.message, /device/);
});

test('a model file over 2 GiB is refused before reading (sparse 3 GiB file)', { timeout: 20_000 }, () => {
  const file = path.join(fresh('huge'), 'huge.onnx');
  writeFileSync(file, '');
  truncateSync(file, 3 * 2 ** 30);
  for (const threshold of [1024, Infinity]) {
    throwsWith(() => readModelFile(file, { deferThreshold: threshold }), ModelTooLargeError, /3\.00 GiB; protobuf limits a model file to 2 GiB/);
  }
  assert.equal(openDescriptorsOn(file), 0, 'no descriptor left open');
});

// 4. The lazy walker stops at the first impossible field.

test('a sparse 1 GiB file of zeros fails at byte 0 (field number 0), quickly', { timeout: 20_000 }, () => {
  const file = path.join(fresh('zeros'), 'zeros.onnx');
  writeFileSync(file, '');
  truncateSync(file, 2 ** 30);
  const before = bytesReadSoFar();
  const error = throwsWith(() => readModelFile(file), OnnxDecodeError, /field number 0/);
  const read = bytesReadSoFar() - before;
  assert.equal(error.offset, 0);
  assert.ok(read < 16 << 20, `stopped at the first field: read ${read} bytes of 1 GiB`);
  assert.equal(openDescriptorsOn(file), 0, 'no descriptor left open');
});

test('impossible fields inside a model are reported with their byte offset', () => {
  const dir = fresh('fields');
  const valid = encodeModel(buildTinyGpt({ vocab: 64, dim: 16 }));
  const cases: Array<[string, Uint8Array, RegExp]> = [
    ['field number 0, length-delimited', Uint8Array.of(0x02, 0x01, 0x00), /field number 0/],
    ['field number past 2^29 - 1', Uint8Array.of(...encodeVarint(2 ** 29 * 8), 0x00), /field number 536870912 is beyond protobuf's limit/],
    ['group start', Uint8Array.of((14 << 3) | 3), /group \(wire type 3\)/],
    ['group end', Uint8Array.of((14 << 3) | 4), /group \(wire type 4\)/],
    ['wire type 6', Uint8Array.of((14 << 3) | 6), /invalid wire type 6/],
    ['wire type 7', Uint8Array.of((14 << 3) | 7), /invalid wire type 7/],
    ['length past its message', Uint8Array.of((14 << 3) | 2, 0x7f, 0x00), /claims 127 bytes/],
  ];
  for (const [label, field, message] of cases) {
    const file = path.join(dir, `${label.replace(/\W+/g, '-')}.onnx`);
    const bytes = new Uint8Array(valid.length + field.length);
    bytes.set(valid);
    bytes.set(field, valid.length);
    writeFileSync(file, bytes);
    const error = throwsWith(() => readCompact(file, 1024), OnnxDecodeError, message);
    const expected = label.startsWith('length') ? valid.length + 2 : valid.length;
    assert.equal(error.offset, expected, `${label}: offset`);
  }
});

// 5. In place through a symbolic link: the link's target is written, the link stays.

test('--in-place on a symbolic link writes the link\'s target and keeps the link (library and CLI)', async () => {
  const dir = fresh('symlink');
  mkdirSync(path.join(dir, 'real'));
  const target = path.join(dir, 'real', 'model.onnx');
  const link = path.join(dir, 'link.onnx');
  const original = gptBytes();
  writeFileSync(target, original);
  symlinkSync('real/model.onnx', link);

  const loaded = readModelFile(link, LAZY);
  applyNeftune(loaded.model, { seed: 3 });
  await saveModelFile(loaded, link, { inPlace: true });
  assert.ok(lstatSync(link).isSymbolicLink(), 'still a link');
  assert.equal(readlinkSync(link), 'real/model.onnx');
  assert.ok(sameBytes(read(target), expectedAfter(original, (m) => { applyNeftune(m, { seed: 3 }); })));
  loaded.close();

  writeFileSync(target, original);
  const r = runCliJson(['patch', 'link.onnx', '--in-place'], { cwd: dir });
  assert.equal(r.code, 0, r.stdout);
  assert.ok(lstatSync(link).isSymbolicLink(), 'still a link after the CLI');
  assert.equal(readlinkSync(link), 'real/model.onnx');
  assert.ok(isPatched(decodeModel(read(target))), 'the target was patched');
  assert.deepEqual([...tempFilesIn(dir), ...tempFilesIn(path.join(dir, 'real'))], []);
});

// 6. Every failed write is a typed OutputWriteError (WRITE_FAILED, exit 7).

test('an output folder that is a file: typed WRITE_FAILED error naming the path and errno, no stack', async () => {
  const dir = fresh('not-a-folder');
  const model = path.join(dir, 'model.onnx');
  writeFileSync(model, gptBytes());
  writeFileSync(path.join(dir, 'some-file'), 'a file where a folder should be');
  for (const out of ['some-file/out.onnx', 'some-file/deeper/out.onnx']) {
    const r = runCliJson(['patch', model, '-o', path.join(dir, out)]);
    assert.equal(r.code, 7, r.stdout);
    const error = r.json.files[0].error;
    assert.equal(error.code, 'WRITE_FAILED');
    assert.match(error.message, /^Cannot write .*some-file.*: (ENOTDIR|EEXIST)\b.*Part of the output path is a file, not a folder/);
    assert.doesNotMatch(r.json.files[0].message, /Unexpected error|    at /);
  }
  assert.equal(readFileSync(path.join(dir, 'some-file'), 'utf8'), 'a file where a folder should be');
});

// Root ignores permission bits, so a read-only file system stands in for a folder one cannot write.
const readOnly = (() => {
  const dir = mkdtempSync(path.join(tmpdir(), 'neftune-io-readonly-'));
  const r = spawnSync('mount', ['-t', 'tmpfs', '-o', 'ro,size=1m', 'tmpfs', dir]);
  const mounted = r.status === 0;
  after(() => { if (mounted) spawnSync('umount', [dir]); rmSync(dir, { recursive: true, force: true }); });
  return { dir, skip: mounted ? false : `cannot mount a read-only tmpfs here (${r.stderr?.toString().trim() || 'mount failed'})` };
})();

test('a read-only output folder: typed WRITE_FAILED error (EROFS), nothing written', { skip: readOnly.skip }, () => {
  const dir = fresh('ro-src');
  const model = path.join(dir, 'model.onnx');
  writeFileSync(model, gptBytes());
  for (const out of ['out.onnx', 'sub/out.onnx']) {
    const r = runCliJson(['patch', model, '-o', path.join(readOnly.dir, out)]);
    assert.equal(r.code, 7, r.stdout);
    assert.equal(r.json.files[0].error.code, 'WRITE_FAILED');
    assert.match(r.json.files[0].error.message, /EROFS.*read-only/);
  }
  assert.deepEqual(readdirSync(readOnly.dir), []);
});

// 7. Stale temp files of killed runs are removed, nothing else.

test('a write removes stale temp files of dead runs, and never a live run\'s or a lookalike', () => {
  const dir = fresh('stale');
  const model = path.join(dir, 'model.onnx');
  writeFileSync(model, gptBytes());
  const out = fresh('stale-out');
  const child = spawnSync(process.execPath, ['-e', '']);
  const dead = child.pid!;
  assert.throws(() => process.kill(dead, 0), 'the child is gone');
  const hourAgo = new Date(Date.now() - 3600_000);
  const inAnHour = new Date(Date.now() + 3600_000);
  const stale = `.out.onnx.${dead}.0badc0de.tmp`;
  const kept: Record<string, Date> = {
    [`.out.onnx.${process.pid}.0badc0de.tmp`]: hourAgo, // a live process
    [`.other.onnx.${dead}.12345678.tmp`]: inAnHour, // newer than the writing process
    [`.out.onnx.${dead}.0badc0de.tmp.keep`]: hourAgo,
    [`out.onnx.${dead}.0badc0de.tmp`]: hourAgo,
    [`.out.onnx.${dead}.0BADC0DE.tmp`]: hourAgo,
    [`.out.onnx.${dead}.badc0de.tmp`]: hourAgo,
    [`.out.onnx.${dead}.tmp`]: hourAgo,
    [`.out.onnx.x${dead}.0badc0de.tmp`]: hourAgo,
    'notes.txt': hourAgo,
  };
  for (const [name, time] of Object.entries({ [stale]: hourAgo, ...kept })) {
    writeFileSync(path.join(out, name), 'x');
    utimesSync(path.join(out, name), time, time);
  }
  const folderLike = `.dir.${dead}.0badc0de.tmp`;
  mkdirSync(path.join(out, folderLike));
  utimesSync(path.join(out, folderLike), hourAgo, hourAgo);
  const linkLike = `.link.${dead}.0badc0de.tmp`;
  symlinkSync('notes.txt', path.join(out, linkLike));
  lutimesSync(path.join(out, linkLike), hourAgo, hourAgo);

  const r = runCliJson(['patch', model, '-o', path.join(out, 'out.onnx')]);
  assert.equal(r.code, 0, r.stdout);
  assert.ok(!existsSync(path.join(out, stale)), 'the dead run\'s temp file was removed');
  assert.deepEqual(readdirSync(out).sort(), [...Object.keys(kept), folderLike, linkLike, 'out.onnx'].sort());
  assert.ok(lstatSync(path.join(out, linkLike)).isSymbolicLink());
});

// 8. Data copies stay inside the destination folder, and a failed save takes its copies back.

test('copying external data through a symlinked subfolder or onto a symlink is refused', async () => {
  const src = fresh('carry-src');
  const { file } = await externalModel(src, 'sub/weights.bin');
  // A subfolder of the destination that is a link to elsewhere.
  const out = fresh('carry-out');
  const elsewhere = fresh('elsewhere');
  symlinkSync(path.relative(out, elsewhere), path.join(out, 'sub'));
  const r = runCliJson(['patch', file, '-o', path.join(out, 'patched.onnx')]);
  assert.equal(r.code, 5, r.stdout);
  assert.match(r.json.files[0].error.message, /sub: that folder is a symbolic link/);
  assert.deepEqual(readdirSync(elsewhere), []);
  assert.ok(!existsSync(path.join(out, 'patched.onnx')));
  // The data file's own name is a link (here to an identical copy, still refused).
  const out2 = fresh('carry-out2');
  mkdirSync(path.join(out2, 'sub'));
  const copy = path.join(elsewhere, 'copy.bin');
  writeFileSync(copy, read(path.join(src, 'sub', 'weights.bin')));
  symlinkSync(copy, path.join(out2, 'sub', 'weights.bin'));
  const loaded = readModelFile(file);
  await rejectsWith(saveModelFile(loaded, path.join(out2, 'patched.onnx')), RefusedError, /weights\.bin: it is a symbolic link/);
  assert.ok(!existsSync(path.join(out2, 'patched.onnx')));
  assert.ok(lstatSync(path.join(out2, 'sub', 'weights.bin')).isSymbolicLink());
});

/** A model whose weights are in two data files, w.data and (the last external tensor) b.data. */
async function twoDataFiles(dir: string): Promise<string> {
  const { file, data } = await externalModel(dir, 'w.data');
  const model = decodeModel(read(file));
  const external = model.graph.initializers.filter((v) => v.initializer!.storage === 'external');
  assert.ok(external.length >= 2);
  const entry = external[external.length - 1]!.initializer!.proto.external_data!.find((e) => e.key === 'location')!;
  entry.value = 'b.data';
  writeFileSync(path.join(dir, 'b.data'), read(data));
  writeFileSync(file, encodeModel(model));
  return file;
}

test('a refused or failed save removes the data files it copied, never files that were there before', async () => {
  const src = fresh('rollback-src');
  const file = await twoDataFiles(src);
  const loaded = readModelFile(file);
  assert.deepEqual(loaded.externalData.map((f) => f.location), ['w.data', 'b.data']);
  // b.data cannot follow (a different file of that name): the w.data copy made before is removed.
  const out = fresh('rollback-out');
  writeFileSync(path.join(out, 'b.data'), 'somebody else\'s data');
  await rejectsWith(saveModelFile(loaded, path.join(out, 'patched.onnx')), RefusedError, /different file of that name/);
  assert.deepEqual(readdirSync(out), ['b.data']);
  // An identical w.data that was already there is reused, and stays after the refusal.
  const out2 = fresh('rollback-out2');
  writeFileSync(path.join(out2, 'w.data'), read(path.join(src, 'w.data')));
  writeFileSync(path.join(out2, 'b.data'), 'somebody else\'s data');
  await rejectsWith(saveModelFile(loaded, path.join(out2, 'patched.onnx')), RefusedError, /different file of that name/);
  assert.deepEqual(readdirSync(out2).sort(), ['b.data', 'w.data']);
  // The model write itself fails (its name is a folder): both copies are removed again.
  const out3 = fresh('rollback-out3');
  mkdirSync(path.join(out3, 'patched.onnx', 'inside'), { recursive: true });
  await rejectsWith(saveModelFile(loaded, path.join(out3, 'patched.onnx')), OutputWriteError, /Cannot write .*patched\.onnx/);
  assert.deepEqual(readdirSync(out3), ['patched.onnx']);
  loaded.close();
});

test('the CLI maps a 3 GiB file as the model to exit 4 and a folder to exit 2, never INTERNAL', { timeout: 20_000 }, () => {
  const dir = fresh('cli-special');
  const big = path.join(dir, 'big.onnx');
  writeFileSync(big, '');
  truncateSync(big, 3 * 2 ** 30);
  const r = runCliJson(['inspect', big]);
  assert.equal(r.code, 4, r.stdout);
  assert.equal(r.json.files[0].error.code, 'MODEL_TOO_LARGE');
  assert.equal(runCli(['inspect', dir]).code, 2);
});
