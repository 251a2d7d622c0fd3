import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, readFileSync, readdirSync, symlinkSync, writeFileSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { ModelBuilder, Tensor, decodeModel, encodeModel } from '../src/graph/index.js';
import { isPatched, readPatchRecord } from '../src/passes/index.js';
import { buildTinyBert, buildTinyGemma, buildTinyGpt, buildTinyTrainingGraph } from '../examples/models.js';
import { cliPath, runCli, runCliJson, tempDir } from './cli-helpers.js';
import { projectRoot, readFixture, sameBytes, skipWithoutFixtures } from './helpers.js';

const dir = tempDir('cli');
const write = (name: string, bytes: Uint8Array) => { const p = path.join(dir, name); mkdirSync(path.dirname(p), { recursive: true }); writeFileSync(p, bytes); return p; };
const training = encodeModel(buildTinyTrainingGraph());
const gpt = encodeModel(buildTinyGpt());
const read = (p: string) => new Uint8Array(readFileSync(p));

function ambiguousModel(): Uint8Array {
  const b = new ModelBuilder({ opset: 17, irVersion: 8 });
  const t1 = b.initializer('query_table', Tensor.fromArray('float', [10, 4], new Float32Array(40)));
  const t2 = b.initializer('doc_table', Tensor.fromArray('float', [10, 4], new Float32Array(40)));
  b.output(b.op('Add', [b.op('Gather', [t1, b.input('q', 'int64', [2])]), b.op('Gather', [t2, b.input('d', 'int64', [2])])]), 'float', [2, 4]);
  return encodeModel(b.build());
}

test('--help lists every command with examples and the exit codes', () => {
  const top = runCli(['--help']);
  assert.equal(top.code, 0);
  for (const word of ['inspect', 'patch', 'strip', 'Examples:', 'Exit codes:', '3  no token embedding']) assert.ok(top.stdout.includes(word), word);
  for (const command of ['inspect', 'patch', 'strip']) {
    const help = runCli([command, '--help']);
    assert.equal(help.code, 0);
    assert.match(help.stdout, /Examples:/, `${command} --help has examples`);
  }
  const patchHelp = runCli(['patch', '--help']).stdout;
  for (const flag of ['--output', '--in-place', '--alpha', '--mode', '--mask-input', '--position-ids-input', '--table', '--node', '--all-candidates', '--seed', '--alpha-input', '--after-scale', '--repatch', '--dry-run', '--json']) {
    assert.ok(patchHelp.includes(flag), `patch --help documents ${flag}`);
  }
});

test('usage errors exit 2', () => {
  assert.equal(runCli([]).code, 2);
  assert.equal(runCli(['frobnicate']).code, 2);
  assert.equal(runCli(['patch', write('u.onnx', gpt)]).code, 2, 'no -o and no --in-place');
  assert.equal(runCli(['patch', write('u2.onnx', gpt), '-o', 'x', '--in-place']).code, 2);
  assert.equal(runCli(['patch', write('u3.onnx', gpt), '--mode', 'weird', '-o', 'x']).code, 2);
  const json = runCliJson(['patch', write('u4.onnx', gpt)]);
  assert.equal(json.code, 2);
  assert.deepEqual(json.json.files, []);
  assert.equal(json.json.error.code, 'USAGE');
});

test('a single-value flag given twice is a usage error (exit 2) for every command; repeatable flags stay repeatable', () => {
  const model = write('repeat.onnx', gpt);
  const cases = [
    ['train', model, '--data', 'd.jsonl', '-o', 'n.onnx', '-o', 'n2.onnx'],
    ['train', model, '--data', 'd.jsonl', '--data', 'e.jsonl', '-o', 'n.onnx'],
    ['train', model, '--data', 'd.jsonl', '-o', 'n.onnx', '--max-len', '32', '--max-len', '1', '--json'],
    ['step', model, '-o', 'a.onnx', '--output', 'b.onnx'],
    ['patch', model, '-o', 'a.onnx', '-o', 'b.onnx'],
    ['patch', model, '-o', 'a.onnx', '--alpha', '1', '--alpha', '2'],
    ['verify', model, '--batch', '1', '--batch', '2'],
  ];
  for (const args of cases) {
    const r = runCli(args, { cwd: dir });
    assert.equal(r.code, 2, `${args.join(' ')}: exit ${r.code}\n${r.stderr}`);
    assert.match(r.stderr, /^error: --[a-z-]+ takes one value and was given 2 times/, args.join(' '));
    assert.doesNotMatch(r.stderr, /internal error|TypeError/);
  }
  assert.ok(!existsSync(path.join(dir, 'n.onnx')) && !existsSync(path.join(dir, 'a.onnx')), 'nothing written');
  const repeatable = runCli(['step', model, '-o', path.join(dir, 'rep-step.onnx'), '--params', 'transformer.wte.weight', '--params', 'transformer.wpe.weight']);
  assert.equal(repeatable.code, 0, repeatable.stderr);
});

test('inspect: readable report and one JSON object with the documented shape', () => {
  const file = write('inspect/gpt.onnx', gpt);
  const text = runCli(['inspect', file]);
  assert.equal(text.code, 0);
  assert.match(text.stdout, /IR version 8; opsets ai\.onnx 17/);
  assert.match(text.stdout, /\*\s+wte_lookup\s+Gather\s+transformer\.wte\.weight\s+64 x 16\s+FLOAT\s+initializer/);
  assert.match(text.stdout, /wpe_lookup.*position/);
  assert.match(text.stdout, /not patched/);
  const { json, code } = runCliJson(['inspect', file]);
  assert.equal(code, 0);
  assert.deepEqual(Object.keys(json), ['tool', 'version', 'command', 'ok', 'exitCode', 'files', 'summary']);
  const m = json.files[0].model;
  assert.deepEqual(Object.keys(m), ['irVersion', 'opsets', 'producer', 'bytes', 'nodes', 'patched', 'patch', 'externalData', 'embeddings']);
  assert.deepEqual(Object.keys(m.embeddings.candidates[0]), ['node', 'graphPath', 'kind', 'table', 'indices', 'outputType', 'role', 'reasons', 'patchable', 'notPatchableReason', 'invalidReason', 'scale', 'defaultTarget']);
  assert.deepEqual(m.embeddings.defaultTarget, ['wte_lookup']);
  assert.equal(m.patched, false);
  // A patched model shows its recorded options.
  const patched = path.join(dir, 'inspect/gpt.patched.onnx');
  assert.equal(runCli(['patch', file, '-o', patched, '--seed', '7', '--alpha', '10']).code, 0);
  const again = runCliJson(['inspect', patched]).json.files[0].model;
  assert.equal(again.patched, true);
  assert.equal(again.patch.options.alpha, 10);
  assert.equal(again.patch.options.seed, 7);
  assert.match(runCli(['inspect', patched]).stdout, /NEFTune patch present: alpha 10, mode hf, seed 7/);
});

test('patch -o writes a patched copy and never touches the input; strip restores the bytes', () => {
  const input = write('basic/model.onnx', training);
  const out = path.join(dir, 'basic/out/model.neftune.onnx');
  const r = runCliJson(['patch', input, '-o', out, '--alpha-input', '--seed', '3']);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.json.files[0].status, 'patched');
  assert.equal(r.json.files[0].sites[0].table, 'embedding.weight');
  assert.ok(sameBytes(read(input), training), 'input unchanged');
  const model = decodeModel(read(out));
  assert.ok(isPatched(model));
  assert.equal(readPatchRecord(model)!.options.alphaInput, true);
  assert.ok(model.graph.inputs.some((v) => v.name === 'neftune_alpha'));
  const restored = path.join(dir, 'basic/restored.onnx');
  const s = runCliJson(['strip', out, '-o', restored]);
  assert.equal(s.code, 0);
  assert.equal(s.json.files[0].status, 'stripped');
  assert.ok(sameBytes(read(restored), training));
  // Strip on an unpatched model: nothing to strip, exit 0, status unchanged.
  const again = runCliJson(['strip', restored, '-o', path.join(dir, 'basic/again.onnx')]);
  assert.equal(again.code, 0);
  assert.equal(again.json.files[0].status, 'unchanged');
  assert.match(again.json.files[0].message, /Nothing to strip/);
});

test('refusals exit 5: patching a patched model, writing over the input without --in-place', () => {
  const input = write('refuse/model.onnx', training);
  const patched = path.join(dir, 'refuse/patched.onnx');
  assert.equal(runCli(['patch', input, '-o', patched]).code, 0);
  const twice = runCliJson(['patch', patched, '-o', path.join(dir, 'refuse/twice.onnx')]);
  assert.equal(twice.code, 5);
  assert.equal(twice.json.files[0].error.code, 'ALREADY_PATCHED');
  const repatch = runCliJson(['patch', patched, '-o', path.join(dir, 'refuse/re.onnx'), '--repatch', '--alpha', '10']);
  assert.equal(repatch.code, 0);
  const over = runCliJson(['patch', input, '-o', input]);
  assert.equal(over.code, 5);
  assert.equal(over.json.files[0].error.code, 'REFUSED');
  assert.ok(sameBytes(read(input), training), 'the refused input is untouched');
});

test('--in-place patches and strips the file itself', () => {
  const file = write('inplace/model.onnx', training);
  assert.equal(runCli(['patch', file, '--in-place']).code, 0);
  assert.ok(isPatched(decodeModel(read(file))));
  assert.equal(runCli(['strip', file, '--in-place']).code, 0);
  assert.ok(sameBytes(read(file), training));
  assert.deepEqual(readdirSync(path.dirname(file)).filter((f) => f.endsWith('.tmp')), [], 'no temp files left');
});

test('every patch flag reaches the pass', () => {
  const bert = write('flags/bert.onnx', encodeModel(buildTinyBert()));
  const out = (n: string) => path.join(dir, 'flags', n);
  const record = (file: string) => readPatchRecord(decodeModel(read(file)))!;
  assert.equal(runCli(['patch', bert, '-o', out('a.onnx'), '--alpha', '15', '--mode', 'mask', '--mask-input', 'attention_mask', '--seed', '11']).code, 0);
  assert.deepEqual(record(out('a.onnx')).options, { alpha: 15, mode: 'mask', maskInput: 'attention_mask', seed: 11 }, 'switches not given are not recorded');
  assert.equal(runCli(['patch', bert, '-o', out('b.onnx'), '--table', 'embeddings.word_embeddings.weight', '--table', 'embeddings.token_type_embeddings.weight']).code, 0);
  assert.deepEqual(record(out('b.onnx')).sites.map((s) => s.table), ['embeddings.word_embeddings.weight', 'embeddings.token_type_embeddings.weight']);
  assert.equal(runCli(['patch', bert, '-o', out('c.onnx'), '--node', 'position_lookup']).code, 0);
  assert.deepEqual(record(out('c.onnx')).sites.map((s) => s.lookup), ['position_lookup']);
  assert.equal(runCli(['patch', bert, '-o', out('d.onnx'), '--all-candidates']).code, 0);
  assert.equal(record(out('d.onnx')).sites.length, 3);
  assert.equal(runCli(['patch', bert, '-o', out('e.onnx'), '--alpha-input', 'anneal']).code, 0);
  assert.equal(record(out('e.onnx')).options.alphaInput, 'anneal');
  const gemma = write('flags/gemma.onnx', encodeModel(buildTinyGemma()));
  assert.equal(runCli(['patch', gemma, '-o', out('f.onnx'), '--after-scale']).code, 0);
  assert.equal(record(out('f.onnx')).sites[0]!.afterScale, true);
  const gptPacked = write('flags/gpt-packed.onnx', encodeModel(buildTinyGpt({ positionIdsInput: true })));
  assert.equal(runCli(['patch', gptPacked, '-o', out('g.onnx'), '--mode', 'packed', '--position-ids-input', 'position_ids']).code, 0);
  assert.equal(record(out('g.onnx')).options.positionIdsInput, 'position_ids');
  const dry = runCliJson(['patch', bert, '-o', out('dry.onnx'), '--dry-run']);
  assert.equal(dry.code, 0);
  assert.equal(dry.json.files[0].status, 'dry-run');
  assert.ok(!existsSync(out('dry.onnx')), '--dry-run writes nothing');
  // Options that do not fit: exit 2 with the reason.
  for (const args of [['--alpha', '0'], ['--alpha', '-3'], ['--mode', 'mask', '--mask-input', 'nope'], ['--table', 'nope'], ['--seed', '1.5']]) {
    const r = runCliJson(['patch', bert, '-o', out('bad.onnx'), ...args]);
    assert.equal(r.code, 2, args.join(' '));
    assert.equal(r.json.files[0].error.code, 'BAD_OPTION');
  }
});

test('no embedding or an ambiguous choice exits 3 with the candidates', () => {
  const amb = runCliJson(['patch', write('amb/model.onnx', ambiguousModel()), '-o', path.join(dir, 'amb/out.onnx')]);
  assert.equal(amb.code, 3);
  assert.equal(amb.json.files[0].error.code, 'AMBIGUOUS_EMBEDDING');
  assert.match(amb.json.files[0].error.message, /query_table[\s\S]*doc_table|doc_table[\s\S]*query_table/);
  assert.match(amb.json.files[0].error.message, /Choose with --table or --node \(names, each repeatable\) or --all-candidates\./, 'options are named as flags');
  const text = runCli(['patch', write('amb/model2.onnx', ambiguousModel()), '-o', path.join(dir, 'amb/out2.onnx')]);
  assert.match(text.stdout + text.stderr, /Choose with --table or --node/, 'the readable output names flags too');
  const b = new ModelBuilder({ opset: 17, irVersion: 8 });
  b.output(b.op('Relu', [b.input('x', 'float', [2])]), 'float', [2]);
  const none = runCliJson(['patch', write('none/model.onnx', encodeModel(b.build())), '-o', path.join(dir, 'none/out.onnx')]);
  assert.equal(none.code, 3);
  assert.equal(none.json.files[0].error.code, 'NO_EMBEDDING');
});

test('invalid models exit 4', () => {
  const broken = write('broken/model.onnx', gpt.slice(0, gpt.length - 100));
  const r = runCliJson(['inspect', broken]);
  assert.equal(r.code, 4);
  assert.equal(r.json.files[0].error.code, 'ONNX_DECODE');
  assert.match(r.json.files[0].error.message, /byte offset/);
  const missing = runCliJson(['inspect', path.join(dir, 'does-not-exist.onnx')]);
  assert.equal(missing.code, 4);
  assert.equal(missing.json.files[0].error.code, 'FILE_ACCESS');
});

test('a batch mixing good and broken files: each on its own, a summary, non-zero exit', () => {
  const batch = path.join(dir, 'batch');
  write('batch/a.onnx', training);
  write('batch/nested/b.onnx', gpt);
  write('batch/c.onnx', new TextEncoder().encode('not a model'));
  const out = path.join(dir, 'batch-out');
  const r = runCliJson(['patch', batch, '-o', out]);
  assert.equal(r.code, 4, 'the only failure kind decides the exit code');
  assert.deepEqual(r.json.files.map((f: { status: string }) => f.status), ['patched', 'failed', 'patched']);
  assert.deepEqual(r.json.summary, { total: 3, succeeded: 2, failed: 1 });
  assert.ok(existsSync(path.join(out, 'a.onnx')) && existsSync(path.join(out, 'nested/b.onnx')));
  const text = runCli(['patch', batch, '-o', path.join(dir, 'batch-out2')]);
  assert.match(text.stderr, /3 files: 2 succeeded, 1 failed/);
  // Mixed failure kinds: exit 1.
  write('batch2/amb.onnx', ambiguousModel());
  write('batch2/bad.onnx', new Uint8Array([1, 2, 3]));
  assert.equal(runCli(['patch', path.join(dir, 'batch2'), '-o', path.join(dir, 'batch2-out')]).code, 1);
});

test('a training-artifacts folder: only training_model.onnx is patched, the other files are copied, and the report says so', () => {
  write('artifacts/training_model.onnx', training);
  write('artifacts/eval_model.onnx', training);
  write('artifacts/optimizer_model.onnx', gpt);
  const r = runCliJson(['patch', path.join(dir, 'artifacts'), '-o', path.join(dir, 'artifacts-out')]);
  assert.equal(r.code, 0);
  assert.equal(r.json.files.length, 1);
  assert.match(r.json.files[0].input, /training_model\.onnx$/);
  assert.match(r.json.files[0].note, /training artifacts folder: only training_model\.onnx is processed, and the folder's other files are copied unchanged/);
  assert.deepEqual(r.json.files[0].copied, ['eval_model.onnx', 'optimizer_model.onnx']);
  assert.deepEqual(readdirSync(path.join(dir, 'artifacts-out')).sort(), ['eval_model.onnx', 'optimizer_model.onnx', 'training_model.onnx']);
});

test('stdin to stdout pipelines', () => {
  const r = runCli(['patch', '-', '-o', '-', '--seed', '1'], { input: training });
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stderr, /patched stdin -> stdout/, 'messages go to stderr when stdout carries the model');
  const patched = new Uint8Array(r.stdoutBytes);
  assert.ok(isPatched(decodeModel(patched)));
  const s = runCli(['strip', '-'], { input: patched });
  assert.equal(s.code, 0);
  assert.ok(sameBytes(new Uint8Array(s.stdoutBytes), training));
  assert.equal(runCli(['patch', '-', '-o', '-', '--json'], { input: training }).code, 2, '--json cannot share stdout with the model');
});

/** `script` (util-linux) runs a command on a pseudo-terminal: stdout and stderr are TTYs there. */
const haveScript = spawnSync('script', ['--version']).status === 0;

test('colour only on a terminal: escape codes on a TTY, none with NO_COLOR, TERM=dumb or a pipe', { skip: haveScript ? false : 'script(1) not found: no pseudo-terminal to test colour on', timeout: 60_000 }, () => {
  const file = write('color/m.onnx', gpt);
  const { NO_COLOR: _, FORCE_COLOR: __, ...base } = process.env;
  const onTty = (env: Record<string, string>) => {
    const command = [process.execPath, cliPath, 'inspect', file].map((a) => `'${a.replace(/'/g, `'\\''`)}'`).join(' ');
    const r = spawnSync('script', ['-qec', command, '/dev/null'], { env: { ...base, TERM: 'xterm', ...env }, encoding: 'utf8', timeout: 30_000 });
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /not patched/, 'the command ran on the terminal');
    return r.stdout;
  };
  assert.match(onTty({}), /\x1b\[1m/, 'a terminal gets colour (bold table header)');
  assert.doesNotMatch(onTty({ NO_COLOR: '1' }), /\x1b\[/, 'NO_COLOR turns it off');
  assert.doesNotMatch(onTty({ NO_COLOR: '' }), /\x1b\[/, 'NO_COLOR set to anything, even empty, turns it off');
  assert.doesNotMatch(onTty({ TERM: 'dumb' }), /\x1b\[/, 'TERM=dumb turns it off');
  const piped = spawnSync(process.execPath, [cliPath, 'inspect', file], { env: { ...base, TERM: 'xterm' }, encoding: 'utf8' });
  assert.equal(piped.status, 0);
  assert.doesNotMatch(piped.stdout, /\x1b\[/, 'a pipe gets no colour, even without NO_COLOR');
});

test('the fused-lookup fixture is refused with exit 3 and the reason', { skip: skipWithoutFixtures }, () => {
  const file = write('fused/model.onnx', readFixture('ort_tiny_gpt2_beamsearch_fp16.onnx'));
  const r = runCliJson(['patch', file, '-o', path.join(dir, 'fused/out.onnx')]);
  assert.equal(r.code, 3);
  assert.match(r.json.files[0].error.message, /EmbedLayerNormalization/);
});

test('verify: exit 0 when every check passes, 6 when nothing is patched, 2 for an unavailable provider', () => {
  const input = write('verify/model.onnx', training);
  const out = path.join(dir, 'verify/patched.onnx');
  assert.equal(runCli(['patch', input, '-o', out, '--alpha-input']).code, 0);
  const r = runCliJson(['verify', out, '--ep', 'cpu', '--ep', 'wasm', '--runs', '2']);
  assert.equal(r.code, 0, r.stdout);
  const reports = r.json.files[0].verify;
  assert.deepEqual(reports.map((x: { ep: string }) => x.ep), ['cpu', 'wasm']);
  assert.deepEqual(Object.keys(reports[0]), ['ep', 'ortVersion', 'batch', 'seq', 'runs', 'ok', 'patched', 'mode', 'alpha', 'ran', 'sliceReason', 'sites', 'candidates', 'notes', 'message']);
  assert.deepEqual(reports[0].sites[0].checks.map((c: { name: string }) => c.name), ['noise', 'fresh', 'alpha-zero', 'strip']);
  const text = runCli(['verify', out]);
  assert.match(text.stdout, /PASS .* on cpu \(ONNX Runtime 1\.\d+\.\d+\)/);
  const unpatched = runCliJson(['verify', input]);
  assert.equal(unpatched.code, 6);
  assert.match(unpatched.json.files[0].verify[0].message, /Nothing is patched/);
  const cuda = runCliJson(['verify', out, '--ep', 'cuda']);
  if (cuda.code !== 0) {
    assert.equal(cuda.code, 2);
    assert.match(cuda.json.files[0].error.message, /--onnxruntime-node-install=cuda12/);
  }
  assert.equal(runCli(['verify', out, '--runs', '0']).code, 2);
});

test('only verify loads ONNX Runtime: inspect, patch and strip never do', () => {
  // A preload that records every package the CLI loads through require (how it loads ONNX Runtime).
  const log = path.join(dir, 'loads.txt');
  const preload = write('record-loads.cjs', new TextEncoder().encode(`
    const Module = require('node:module'); const fs = require('node:fs');
    const load = Module._load; const seen = new Set();
    Module._load = function (request, ...rest) { seen.add(request); return load.call(this, request, ...rest); };
    process.on('exit', () => fs.writeFileSync(${JSON.stringify(log)}, [...seen].join('\\n')));
  `));
  const loads = (args: string[]) => {
    const r = runCli(args, { env: { NODE_OPTIONS: `--require ${preload}` } });
    assert.ok(r.code === 0 || r.code === 6, `${args[0]} ran (exit ${r.code}): ${r.stderr}`);
    return readFileSync(log, 'utf8').split('\n');
  };
  const model = write('loads/gpt.onnx', gpt);
  const patched = path.join(dir, 'loads', 'gpt.patched.onnx');
  for (const args of [['inspect', model], ['patch', model, '-o', patched], ['strip', patched, '-o', path.join(dir, 'loads', 'gpt.stripped.onnx')]]) {
    const ort = loads(args).filter((r) => r.startsWith('onnxruntime'));
    assert.deepEqual(ort, [], `${args[0]} loaded ${ort.join(', ')}`);
  }
  assert.ok(loads(['verify', patched, '--ep', 'cpu']).includes('onnxruntime-node'), 'the recorder sees verify load onnxruntime-node');
});

test('the package bin runs directly through a link, as npm installs it', () => {
  const pkg = JSON.parse(readFileSync(path.join(projectRoot, 'package.json'), 'utf8')) as { bin: Record<string, string>; version: string };
  const target = path.join(projectRoot, pkg.bin['neftune']!);
  const link = path.join(dir, 'bin-link', 'neftune');
  mkdirSync(path.dirname(link), { recursive: true });
  symlinkSync(target, link);
  const r = spawnSync(link, ['--version'], { encoding: 'utf8' });
  assert.equal(r.status, 0, `${link} ran: ${r.stderr}`);
  assert.equal(r.stdout.trim(), pkg.version);
});
