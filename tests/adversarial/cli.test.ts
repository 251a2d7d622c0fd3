/**
 * The CLI against hostile command lines and file systems (security audit, issue 16; issue 10 #7):
 * colliding batch outputs, errno failures, a full stdout, non-regular files, verify's made-up batch
 * size, and messages that name their file. Everything runs the real bin on real files.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync, type SpawnSyncOptions } from 'node:child_process';
import { chmodSync, closeSync, existsSync, mkdirSync, openSync, readFileSync, readdirSync, symlinkSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import path from 'node:path';
import { ModelBuilder, Tensor, encodeModel } from '../../src/graph/index.js';
import { OnnxNeftuneError } from '../../src/graph/errors.js';
import { saveWithExternalData } from '../../src/io/index.js';
import { buildTinyGpt, buildTinyTrainingGraph } from '../../examples/models.js';
import { ERROR_CODES, EXIT, EXIT_CODE_HELP, exitCodeFor, isErrorCode } from '../../cli/exit-codes.js';
import { UsageError } from '../../cli/errors.js';
import { cliPath, runCli, runCliJson, tempDir } from '../cli-helpers.js';
import { fixtureNames, fixturesDir, projectRoot, sameBytes } from '../helpers.js';

const root = tempDir('adv-cli');
const training = encodeModel(buildTinyTrainingGraph());
const gpt = encodeModel(buildTinyGpt());
const read = (p: string) => new Uint8Array(readFileSync(p));
const at = (...parts: string[]) => path.join(root, ...parts);
function put(file: string, bytes: Uint8Array): string {
  mkdirSync(path.dirname(file), { recursive: true });
  writeFileSync(file, bytes);
  return file;
}

/** The real bin with a kill timer: a hang (e.g. opening a FIFO) ends as status null, never as a stuck test. */
function runBounded(args: string[], options: SpawnSyncOptions = {}) {
  const r = spawnSync(process.execPath, [cliPath, ...args], {
    cwd: root, env: { ...process.env, NO_COLOR: '1' }, timeout: 30_000, killSignal: 'SIGKILL', maxBuffer: 1 << 26, ...options,
  });
  return { code: r.status, signal: r.signal, stdout: String(r.stdout ?? ''), stderr: String(r.stderr ?? '') };
}

function mkfifo(file: string): string {
  const r = spawnSync('mkfifo', [file]);
  assert.equal(r.status, 0, `mkfifo ${file}: ${r.stderr}`);
  return file;
}

async function listeningSocket(file: string): Promise<Server> {
  const server = createServer();
  await new Promise<void>((resolve, reject) => { server.once('error', reject); server.listen(file, resolve); });
  return server;
}

/** A GPT-shaped model at `file` with its weights in `${file}.data`. */
async function externalModel(file: string): Promise<{ file: string; data: string }> {
  mkdirSync(path.dirname(file), { recursive: true });
  await saveWithExternalData(buildTinyGpt({ vocab: 128, dim: 32 }), file, { threshold: 256 });
  return { file, data: `${file}.data` };
}

const snapshot = (dir: string) => readdirSync(dir, { recursive: true }).map(String).sort();

// 1. Batches plan every output before writing any.

test('two models of the same name from two folders into one output folder: refused up front, nothing written', () => {
  const a = put(at('same', 'a', 'model.onnx'), training);
  const b = put(at('same', 'b', 'model.onnx'), gpt);
  const out = at('same', 'out');
  const r = runCliJson(['patch', a, b, '-o', `${out}/`]);
  assert.equal(r.code, 2, r.stdout);
  assert.equal(r.json.error.code, 'USAGE');
  assert.deepEqual(r.json.files, []);
  const message: string = r.json.error.message;
  assert.ok(message.includes(path.join(out, 'model.onnx')) && message.includes(a) && message.includes(b), message);
  assert.match(message, /never renamed/);
  assert.ok(!existsSync(out), 'nothing was written');
  const text = runCli(['patch', a, b, '-o', `${out}/`]);
  assert.equal(text.code, 2);
  assert.match(text.stderr, /would be written by 2 models/);
});

test('an input inside the output folder (also through a symlinked path) is never overwritten by another job', () => {
  const out = at('inside', 'out');
  const resident = put(path.join(out, 'model.onnx'), training);
  const other = put(at('inside', 'other', 'model.onnx'), gpt);
  symlinkSync(out, at('inside', 'alias'));
  for (const first of [resident, at('inside', 'alias', 'model.onnx')]) {
    const r = runCliJson(['patch', first, other, '-o', out]);
    assert.equal(r.code, 2, r.stdout);
    assert.match(r.json.error.message, /would replace .*an input of this run/);
    assert.ok(sameBytes(read(resident), training), 'the input in the output folder is untouched');
    assert.deepEqual(readdirSync(out), ['model.onnx'], 'nothing was written');
  }
});

test("the output may not be the input's own external-data file", async () => {
  const { file, data } = await externalModel(at('owndata', 'model.onnx'));
  const before = read(data);
  const r = runCliJson(['patch', file, '-o', data]);
  assert.equal(r.code, 2, r.stdout);
  assert.equal(r.json.error.code, 'USAGE');
  assert.match(r.json.error.message, /would replace .*model\.onnx\.data, external data of .*model\.onnx/);
  assert.ok(sameBytes(read(data), before), 'the weights are untouched');
  // Writing next to the data stays allowed.
  assert.equal(runCli(['patch', file, '-o', at('owndata', 'model.neftune.onnx')]).code, 0);
});

test('every collision of a batch is listed at once, and nothing is written', async () => {
  const { file, data } = await externalModel(at('many', 'ext', 'model.onnx'));
  const impostor = put(at('many', 'a', 'model.onnx.data'), new TextEncoder().encode('not weights'));
  const x1 = put(at('many', 'b', 'x.onnx'), gpt);
  const x2 = put(at('many', 'c', 'x.onnx'), gpt);
  const dataBefore = read(data);
  const listing = snapshot(at('many'));
  const r = runCliJson(['patch', file, impostor, x1, x2, '-o', at('many', 'ext')]);
  assert.equal(r.code, 2, r.stdout);
  const message: string = r.json.error.message;
  assert.match(message, /2 outputs collide/);
  assert.match(message, /model\.onnx\.data \(output of .*a\/model\.onnx\.data\) would replace .*external data of .*ext\/model\.onnx/);
  assert.match(message, /x\.onnx would be written by 2 models: .*b\/x\.onnx, .*c\/x\.onnx/);
  assert.ok(sameBytes(read(data), dataBefore));
  assert.deepEqual(snapshot(at('many')), listing, 'nothing was written');
});

// 2. Every known failure has a documented exit code.

test('every error code thrown in src/ and cli/ maps to a documented exit code other than 1', () => {
  const thrown = new Set<string>();
  const walk = (dir: string) => {
    for (const entry of readdirSync(dir, { withFileTypes: true })) {
      const full = path.join(dir, entry.name);
      if (entry.isDirectory()) walk(full);
      else if (entry.name.endsWith('.ts')) for (const m of readFileSync(full, 'utf8').matchAll(/super\('([A-Z_]+)'/g)) thrown.add(m[1]!);
    }
  };
  walk(path.join(projectRoot, 'src'));
  walk(path.join(projectRoot, 'cli'));
  assert.ok(thrown.size >= 10, `found ${[...thrown].join(', ')}`);
  for (const code of thrown) {
    assert.ok(isErrorCode(code), `${code} has no exit code in cli/exit-codes.ts`);
    const exit = exitCodeFor(code);
    assert.notEqual(exit, EXIT.INTERNAL, `${code} maps to INTERNAL`);
    assert.match(EXIT_CODE_HELP, new RegExp(`^  ${exit}  `, 'm'), `exit ${exit} (${code}) is documented in --help`);
  }
  assert.deepEqual([...ERROR_CODES].sort(), [...thrown].sort(), 'the union lists exactly the codes thrown');
  assert.ok(new UsageError('x') instanceof OnnxNeftuneError, 'UsageError is part of the hierarchy');
  assert.match(runCli(['--help']).stdout, /7 {2}could not write the output/);
});

test('an unreadable folder is a typed failure (FILE_ACCESS, exit 4), not a crash', { skip: process.platform === 'win32' }, () => {
  const batch = at('perm', 'batch');
  put(path.join(batch, 'good.onnx'), training);
  put(path.join(batch, 'locked', 'hidden.onnx'), training);
  const out = at('perm', 'out');
  mkdirSync(out, { recursive: true });
  // Root reads any folder: run the CLI as nobody then.
  const asRoot = process.getuid?.() === 0;
  for (const dir of [root, at('perm'), batch]) chmodSync(dir, 0o755);
  chmodSync(out, 0o777);
  chmodSync(path.join(batch, 'locked'), 0o000);
  try {
    const r = runBounded(['patch', batch, '-o', out, '--json'], asRoot ? { uid: 65534, gid: 65534 } : {});
    assert.equal(r.code, 4, r.stdout + r.stderr);
    const json = JSON.parse(r.stdout);
    assert.deepEqual(json.files.map((f: { status: string }) => f.status), ['patched', 'failed']);
    assert.equal(json.files[1].input, path.join(batch, 'locked'));
    assert.equal(json.files[1].error.code, 'FILE_ACCESS');
    assert.match(json.files[1].error.message, /Cannot read folder .*locked: EACCES \(permission denied\)/);
    const single = runBounded(['patch', path.join(batch, 'locked'), '-o', out, '--json'], asRoot ? { uid: 65534, gid: 65534 } : {});
    assert.equal(single.code, 4, single.stdout + single.stderr);
  } finally {
    chmodSync(path.join(batch, 'locked'), 0o755);
    chmodSync(root, 0o700);
  }
});

// 3. A failing stdout is reported, not a crash.

function withFullStdout(args: string[], input?: Uint8Array) {
  const fd = openSync('/dev/full', 'w');
  try {
    return runBounded(args, { stdio: ['pipe', fd, 'pipe'], ...(input ? { input } : {}) });
  } finally {
    closeSync(fd);
  }
}

test('a full disk on stdout: one line naming ENOSPC on stderr, exit 7', { skip: !existsSync('/dev/full') && 'no /dev/full' }, () => {
  const model = put(at('full', 'model.onnx'), training);
  const patched = runCli(['patch', '-', '-o', '-'], { input: training }).stdoutBytes;
  const cases: Array<[string, string[], Uint8Array | undefined]> = [
    ['patch -o -', ['patch', model, '-o', '-'], undefined],
    ['strip from stdin to stdout', ['strip', '-'], patched],
    ['inspect --json', ['inspect', model, '--json'], undefined],
    ['inspect', ['inspect', model], undefined],
    ['patch --json', ['patch', model, '-o', at('full', 'out.onnx'), '--json'], undefined],
  ];
  for (const [label, args, input] of cases) {
    const r = withFullStdout(args, input);
    assert.equal(r.code, EXIT.WRITE_FAILED, `${label}: exit ${r.code} signal ${r.signal}\n${r.stderr}`);
    const lines = r.stderr.trimEnd().split('\n');
    assert.equal(lines.length, 1, `${label}: one line, got:\n${r.stderr}`);
    assert.match(lines[0]!, /ENOSPC \(no space left on device\)/, label);
    assert.match(lines[0]!, /stdout/, label);
  }
});

test('a closed pipe on stdout still ends quietly', () => {
  const model = put(at('pipe', 'big.onnx'), encodeModel(buildTinyTrainingGraph({ vocab: 8192, dim: 64 })));
  const r = spawnSync('bash', ['-c', `"${process.execPath}" "${cliPath}" patch "${model}" -o - | head -c 16 > /dev/null; echo "exit \${PIPESTATUS[0]}" >&2`], { encoding: 'utf8', timeout: 30_000 });
  assert.equal(r.stderr.trim().split('\n').at(-1), 'exit 0', r.stderr);
  assert.doesNotMatch(r.stderr, /error|Error|\n\s+at /);
});

// 4. Batch folders list what they skip.

test("a batch folder's symbolic links, FIFOs and sockets are listed as skipped and never opened", async () => {
  const dir = at('skips', 'models');
  put(path.join(dir, 'real.onnx'), training);
  const outside = put(at('skips', 'outside', 'linked.onnx'), training);
  symlinkSync(outside, path.join(dir, 'link.onnx'));
  symlinkSync(path.dirname(outside), path.join(dir, 'linked-folder'));
  mkfifo(path.join(dir, 'pipe.onnx'));
  const server = await listeningSocket(path.join(dir, 'sock.onnx'));
  try {
    const r = runBounded(['patch', dir, '-o', at('skips', 'out'), '--json']);
    assert.equal(r.code, 0, `exit ${r.code} signal ${r.signal}: ${r.stdout}${r.stderr}`);
    const json = JSON.parse(r.stdout);
    assert.deepEqual(json.files.map((f: { input: string }) => path.basename(f.input)), ['real.onnx']);
    const skipped = Object.fromEntries(json.skipped.map((s: { path: string; reason: string }) => [path.basename(s.path), s.reason]));
    assert.deepEqual(Object.keys(skipped).sort(), ['link.onnx', 'linked-folder', 'pipe.onnx', 'sock.onnx']);
    assert.match(skipped['link.onnx'], /symbolic link: not followed/);
    assert.match(skipped['linked-folder'], /symbolic link to a folder: not followed/);
    assert.match(skipped['pipe.onnx'], /FIFO/);
    assert.match(skipped['sock.onnx'], /socket/);
    assert.deepEqual(readdirSync(at('skips', 'out')), ['real.onnx'], 'the linked folder was not followed');
    const text = runBounded(['patch', dir, '-o', at('skips', 'out2')]);
    assert.equal(text.code, 0);
    for (const name of ['link.onnx', 'linked-folder', 'pipe.onnx', 'sock.onnx']) assert.match(text.stderr, new RegExp(`skipped .*${name.replace('.', '\\.')}: `), name);
    assert.match(text.stdout, /1 file: 1 succeeded, 0 failed; 4 folder entries skipped/);
  } finally {
    await new Promise((resolve) => server.close(resolve));
  }
});

test('a folder with no processable model is a usage error that lists what was skipped', () => {
  const dir = at('nothing');
  mkdirSync(dir);
  mkfifo(path.join(dir, 'only.onnx'));
  symlinkSync(at('nowhere.onnx'), path.join(dir, 'dangling.onnx'));
  const r = runBounded(['patch', dir, '-o', at('nothing-out'), '--json']);
  assert.equal(r.code, 2, `exit ${r.code} signal ${r.signal}: ${r.stdout}`);
  const json = JSON.parse(r.stdout);
  assert.equal(json.error.code, 'USAGE');
  assert.match(json.error.message, /no model to process; skipped:[\s\S]*dangling\.onnx[\s\S]*only\.onnx/);
  assert.deepEqual(json.skipped.map((s: { path: string }) => path.basename(s.path)), ['dangling.onnx', 'only.onnx']);
});

// 5. verify's made-up batch is bounded.

test('verify refuses a batch that would not fit in memory, naming the estimate and the cap', () => {
  const patched = at('verify', 'patched.onnx');
  assert.equal(runCli(['patch', put(at('verify', 'model.onnx'), training), '-o', patched]).code, 0);
  const r = runBounded(['verify', patched, '--seq', '100000000', '--json']);
  assert.equal(r.code, 2, `exit ${r.code} signal ${r.signal}: ${r.stdout}${r.stderr}`);
  const message: string = JSON.parse(r.stdout).error.message;
  assert.match(message, /would need about [\d.]+ (GiB|TiB|PiB)/);
  assert.match(message, /over the limit of 1\.0 GiB/);
  assert.match(message, /--seq 100000000/);
  const batch = runBounded(['verify', patched, '--batch', '1000000']);
  assert.equal(batch.code, 2, batch.stderr);
  assert.match(batch.stderr, /would need about/);
  const runs = runBounded(['verify', patched, '--runs', '1000000']);
  assert.equal(runs.code, 2, runs.stderr);
  assert.match(runs.stderr, /--runs must be at most 100/);
});

// 6. One model file: a folder or a FIFO is refused before anything is opened.

test('a folder given to inspect or verify is a usage error', () => {
  const dir = at('a-folder');
  put(path.join(dir, 'model.onnx'), training);
  for (const command of ['inspect', 'verify']) {
    const r = runBounded([command, dir, '--json']);
    assert.equal(r.code, 2, `${command}: ${r.stdout}${r.stderr}`);
    const json = JSON.parse(r.stdout);
    assert.equal(json.error.code, 'USAGE');
    assert.match(json.error.message, new RegExp(`is a folder; ${command} takes one model file`));
  }
});

test('a FIFO given as the model is refused before it is opened, never hanging', { timeout: 120_000 }, () => {
  const fifo = mkfifo(at('model-fifo.onnx'));
  for (const args of [['inspect', fifo], ['verify', fifo], ['patch', fifo, '-o', at('fifo-out.onnx')], ['strip', fifo, '-o', at('fifo-out.onnx')], ['patch', fifo, '--in-place']]) {
    const r = runBounded([...args, '--json']);
    assert.equal(r.code, 2, `${args.join(' ')}: exit ${r.code} signal ${r.signal}`);
    assert.match(JSON.parse(r.stdout).error.message, /is a FIFO \(named pipe\), not a model file/, args[0]);
  }
  assert.ok(!existsSync(at('fifo-out.onnx')));
});

// 7. Messages.

test('in a batch every warning names its file', () => {
  const dir = at('warn');
  for (const name of ['one', 'two', 'three']) put(path.join(dir, `${name}.onnx`), gpt);
  const r = runCli(['patch', dir, '-o', at('warn-out')]);
  assert.equal(r.code, 0, r.stderr);
  const warnings = r.stderr.split('\n').filter((l) => /no backward pass/.test(l));
  assert.equal(warnings.length, 3);
  for (const name of ['one', 'two', 'three']) assert.equal(warnings.filter((l) => l.includes(path.join(dir, `${name}.onnx`))).length, 1, name);
});

test('no output line ends in whitespace', async () => {
  const { file } = await externalModel(at('ws', 'ext', 'model.onnx'));
  const model = put(at('ws', 'model.onnx'), training);
  const batch = at('ws', 'batch');
  put(path.join(batch, 'a.onnx'), gpt);
  put(path.join(batch, 'b.onnx'), new TextEncoder().encode('broken'));
  symlinkSync(model, path.join(batch, 'link.onnx'));
  const patched = at('ws', 'patched.onnx');
  const runs: string[][] = [
    ['--help'], ['patch', '--help'], ['verify', '--help'],
    ['inspect', model], ['inspect', file], ['inspect', batch],
    ['patch', model, '-o', patched, '--alpha-input'], ['patch', batch, '-o', at('ws', 'out')], ['patch', model, '-o', model],
    ['inspect', patched], ['verify', patched], ['verify', model], ['strip', patched, '-o', at('ws', 'stripped.onnx')],
    ['patch', model, '--dry-run'], ['frobnicate'],
    // Every third-party fixture's report (when the fixtures are there): many kinds of lookups and tables.
    ...fixtureNames().map((name) => ['inspect', path.join(fixturesDir, name)]),
  ];
  for (const args of runs) {
    const r = runCli(args);
    for (const [stream, text] of [['stdout', r.stdout], ['stderr', r.stderr]] as const) {
      const bad = text.split('\n').filter((l) => /\s$/.test(l));
      assert.deepEqual(bad, [], `${args.join(' ')}: ${stream}`);
    }
  }
});

test('the training-artifacts note reads as plain English', () => {
  const dir = at('artifacts');
  put(path.join(dir, 'training_model.onnx'), training);
  put(path.join(dir, 'eval_model.onnx'), training);
  put(path.join(dir, 'optimizer_model.onnx'), gpt);
  const r = runCliJson(['patch', dir, '--dry-run']);
  assert.equal(r.code, 0);
  assert.equal(r.json.files[0].note, "ONNX Runtime training artifacts folder: only training_model.onnx is processed, and the folder's other files are copied unchanged beside it (nothing is copied when it fails)");
  assert.deepEqual(r.json.files[0].copied, ['eval_model.onnx', 'optimizer_model.onnx'], 'the dry run lists what it would copy');
});

test('strip from stdin to stdout always hands the model on, patched or not', () => {
  const r = runCli(['strip', '-'], { input: training });
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stderr, /unchanged stdin -> stdout: Nothing to strip/);
  assert.ok(sameBytes(new Uint8Array(r.stdoutBytes), training), 'the pipeline gets the model, not nothing');
});

test('an output folder inside the batch folder is not read back as input on the next run', () => {
  put(at('rerun', 'models', 'a.onnx'), gpt);
  put(at('rerun', 'models', 'sub', 'b.onnx'), gpt);
  for (let run = 1; run <= 2; run++) {
    const r = runCliJson(['patch', at('rerun', 'models'), '-o', at('rerun', 'models', 'out')]);
    assert.equal(r.code, 0, `run ${run}: ${r.stdout}`);
    assert.deepEqual(r.json.files.map((f: { input: string }) => path.relative(at('rerun', 'models'), f.input)).sort(), ['a.onnx', path.join('sub', 'b.onnx')]);
    if (run === 2) assert.ok(r.json.skipped.some((s: { path: string; reason: string }) => s.path === at('rerun', 'models', 'out') && /output folder/.test(s.reason)));
  }
  assert.ok(!existsSync(at('rerun', 'models', 'out', 'out')), 'outputs were not patched again into out/out');
});

test('inspect prints a model with 150,000 lookups as text (no spread of the whole table into one call)', { timeout: 120_000 }, () => {
  const b = new ModelBuilder({ opset: 17, irVersion: 8 });
  const ids = b.input('input_ids', 'int64', ['batch', 'sequence']);
  const table = b.initializer('wte', Tensor.fromArray('float', [50, 8], new Float32Array(400)));
  for (let i = 0; i < 150_000; i++) b.output(b.op('Gather', [table, ids], { axis: 0 }, { name: `g${i}` }));
  const file = put(at('many-lookups', 'many.onnx'), encodeModel(b.build()));
  const r = runCli(['inspect', file]);
  assert.equal(r.code, 0, r.stderr.slice(0, 2000));
  assert.match(r.stdout, /read by 150000 lookups/);
});
