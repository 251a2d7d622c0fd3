/**
 * `neftune train` end to end through the real bin on the builder's tiny causal LM and the bundled
 * data: the loss falls, --no-neftune equals alpha 0, --resume equals an uninterrupted run bit for
 * bit, the exported model gives the logits of the final parameters, wasm matches cpu, --compare
 * plots both runs, and every bad input is a clear error with its exit code and no output file.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { copyFileSync, existsSync, mkdirSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { DataType, ModelBuilder, decodeModel, encodeModel } from '../src/graph/index.js';
import { loadCheckpoint, saveCheckpoint } from '../src/io/checkpoint-files.js';
import { Tensor } from '../src/graph/tensor.js';
import { saveWithExternalData } from '../src/io/files.js';
import { buildTinyGpt } from '../examples/models.js';
import { cliPath, runCli, spawn, tempDir } from './cli-helpers.js';
import { projectRoot } from './helpers.js';
import { ort } from './training/helpers.js';
import { tokenBatch } from './training/tiny-lm.js';

const dir = tempDir('train');
const TOKENS = path.join(projectRoot, 'examples/data/tiny-tokens.jsonl');
const ALPACA = path.join(projectRoot, 'examples/data/tiny-alpaca.json');
const TOKENIZER = path.join(projectRoot, 'examples/data/tokenizer.json');

function modelFile(name: string, options: Parameters<typeof buildTinyGpt>[0] = {}): string {
  const file = path.join(dir, name);
  if (!existsSync(file)) writeFileSync(file, encodeModel(buildTinyGpt({ vocab: 64, ...options })));
  return file;
}
const tiny = () => modelFile('tiny.onnx');

interface Lines { steps: Array<{ run: string; step: number; loss: number; alpha: number }>; evals: Array<{ step: number; evalLoss: number }>; summary: Record<string, unknown> }

function train(args: string[], out: string): Lines & { code: number; stderr: string; bytes: Buffer } {
  const r = runCli(['train', tiny(), '--data', TOKENS, '-o', out, '--max-len', '32', '--lr', '0.01', '--json', ...args]);
  assert.equal(r.code, 0, r.stderr);
  const lines = r.stdout.trim().split('\n').map((l) => JSON.parse(l) as { type: string });
  return {
    code: r.code, stderr: r.stderr, bytes: readFileSync(out),
    steps: lines.filter((l) => l.type === 'step') as unknown as Lines['steps'],
    evals: lines.filter((l) => l.type === 'eval') as unknown as Lines['evals'],
    summary: lines.find((l) => l.type === 'summary') as Record<string, unknown>,
  };
}
const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;

test('train: 200 steps on the bundled tokens lower the loss; the export gives the logits of the final parameters', { timeout: 180_000 }, async () => {
  const out = path.join(dir, 'tuned.onnx'), ckpt = path.join(dir, 'ckpt-final');
  const run = train(['--steps', '200', '--checkpoint-dir', ckpt, '--eval-data', TOKENS, '--log', path.join(dir, 'l.csv'), '--plot', path.join(dir, 'l.svg')], out);
  assert.equal(run.steps.length, 200);
  assert.ok(run.steps.every((s) => s.alpha === 5 && s.run === 'neftune'));
  const first = mean(run.steps.slice(0, 10).map((s) => s.loss)), last = mean(run.steps.slice(-10).map((s) => s.loss));
  assert.ok(last < first - 1.5, `loss ${first.toFixed(3)} -> ${last.toFixed(3)}`);
  assert.ok(run.evals.at(-1)!.evalLoss < run.evals[0]!.evalLoss - 1.5, 'eval loss falls');
  assert.equal(run.summary['ok'], true);
  assert.match(readFileSync(path.join(dir, 'l.csv'), 'utf8'), /^run,step,loss,lr,alpha,tokens,seconds,eval_loss\nneftune,1,/);
  assert.match(readFileSync(path.join(dir, 'l.svg'), 'utf8'), /<svg[\s\S]*NEFTune alpha 5 \(train\)[\s\S]*NEFTune alpha 5 \(eval\)/);

  // Reference: the original model with every initializer set from the final checkpoint.
  const final = loadCheckpoint(ckpt);
  assert.equal(final.info.step, 200);
  const reference = buildTinyGpt({ vocab: 64 });
  for (const t of final.tensors) if (reference.graph.initializer(t.name!)) reference.graph.initializer(t.name!)!.initializer = t;
  const exported = decodeModel(new Uint8Array(run.bytes));
  assert.ok(!exported.graph.nodes.some((n) => n.opType === 'RandomUniformLike'), 'NEFTune stripped');
  const b = tokenBatch(2, 16);
  const feeds = { input_ids: new ort.Tensor('int64', b.inputIds, [2, 16]) };
  const [a, want] = await Promise.all([ort.InferenceSession.create(run.bytes), ort.InferenceSession.create(encodeModel(reference))]);
  const got = (await a.run(feeds))['logits']!.data as Float32Array, ref = (await want.run(feeds))['logits']!.data as Float32Array;
  assert.ok(Buffer.from(got.buffer).equals(Buffer.from(ref.buffer)), 'exported logits equal the reference bit for bit');
  const before = (await (await ort.InferenceSession.create(readFileSync(tiny()))).run(feeds))['logits']!.data as Float32Array;
  assert.ok(before.some((v, i) => v !== got[i]), 'training changed the logits');
});

test('train: --no-neftune and NEFTune at alpha 0 give identical runs (losses and exported bytes); alpha 5 differs', { timeout: 180_000 }, () => {
  const plain = train(['--steps', '30', '--no-neftune'], path.join(dir, 'plain.onnx'));
  const zero = train(['--steps', '30', '--alpha', '0'], path.join(dir, 'zero.onnx'));
  const five = train(['--steps', '30'], path.join(dir, 'five.onnx'));
  assert.deepEqual(zero.steps.map((s) => s.loss), plain.steps.map((s) => s.loss));
  assert.ok(zero.bytes.equals(plain.bytes), 'same exported bytes');
  assert.notDeepEqual(five.steps.map((s) => s.loss), plain.steps.map((s) => s.loss));
});

test('train: --resume from a checkpoint equals an uninterrupted run bit for bit (NEFTune, linear schedules, accumulation)', { timeout: 180_000 }, () => {
  const flags = ['--steps', '40', '--schedule', 'linear', '--warmup', '5', '--alpha-schedule', 'linear', '--seed', '7', '--grad-accum', '2', '--batch', '4'];
  const straight = train(flags, path.join(dir, 'straight.onnx'));
  const ckpt = path.join(dir, 'ckpt-every');
  const checkpointed = train([...flags, '--checkpoint-dir', ckpt, '--checkpoint-every', '10'], path.join(dir, 'checkpointed.onnx'));
  assert.deepEqual(checkpointed.steps.map((s) => s.loss), straight.steps.map((s) => s.loss), 'checkpointing does not change the run');
  // The two newest are kept (30 and the final 40): continue from 30 as if the run had been killed after it.
  const resumed = train([...flags, '--resume', path.join(ckpt, 'step-00000030')], path.join(dir, 'resumed.onnx'));
  assert.deepEqual(resumed.steps.map((s) => s.step), [31, 32, 33, 34, 35, 36, 37, 38, 39, 40]);
  assert.deepEqual(resumed.steps.map((s) => s.loss), straight.steps.slice(30).map((s) => s.loss));
  assert.ok(resumed.bytes.equals(straight.bytes), 'the resumed export is byte-identical');
  const seedDiffers = runCli(['train', tiny(), '--data', TOKENS, '-o', path.join(dir, 'never.onnx'), '--max-len', '32', '--lr', '0.01', ...flags.map((f) => (f === '7' ? '8' : f)), '--resume', ckpt]);
  assert.equal(seedDiffers.code, 2);
  assert.match(seedDiffers.stderr, /seed differs from the checkpoint/);
});

test('train: --ep wasm gives the losses of cpu within float tolerance', { timeout: 300_000 }, () => {
  const cpu = train(['--steps', '20'], path.join(dir, 'cpu.onnx'));
  const wasm = train(['--steps', '20', '--ep', 'wasm'], path.join(dir, 'wasm.onnx'));
  cpu.steps.forEach((s, i) => assert.ok(Math.abs(s.loss - wasm.steps[i]!.loss) < 1e-4 * Math.max(1, s.loss), `step ${s.step}: cpu ${s.loss} vs wasm ${wasm.steps[i]!.loss}`));
});

test('train: --compare trains with and without NEFTune from the same seed and plots both', { timeout: 180_000 }, () => {
  const svg = path.join(dir, 'compare.svg');
  const run = train(['--steps', '20', '--compare', '--plot', svg], path.join(dir, 'compare.onnx'));
  const neftune = run.steps.filter((s) => s.run === 'neftune'), plain = run.steps.filter((s) => s.run === 'plain');
  assert.equal(neftune.length, 20);
  assert.equal(plain.length, 20);
  assert.equal(neftune[0]!.loss !== plain[0]!.loss, true, 'the noise changes the first loss');
  const text = readFileSync(svg, 'utf8');
  assert.match(text, /NEFTune alpha 5 \(train\)/);
  assert.match(text, /no NEFTune \(train\)/);
});

test('train: Alpaca data with a tokenizer.json (prompt masked) trains', { timeout: 120_000 }, () => {
  const model = modelFile('tiny-long.onnx', { maxPositions: 128 });
  const out = path.join(dir, 'alpaca.onnx');
  const r = runCli(['train', model, '--data', ALPACA, '--tokenizer', TOKENIZER, '-o', out, '--max-len', '128', '--steps', '5', '--json']);
  assert.equal(r.code, 0, r.stderr);
  const summary = JSON.parse(r.stdout.trim().split('\n').at(-1)!) as { loss: string; steps: number };
  assert.equal(summary.loss, 'causal-lm:labels');
  assert.ok(existsSync(out));
});

function noModelWithoutPath(): string {
  // Logits from the ids alone: no float initializer reaches the output.
  const b = new ModelBuilder({ opset: 17, irVersion: 8 });
  const ids = b.input('input_ids', 'int64', ['batch', 'sequence']);
  const f = b.op('Cast', [ids], { to: DataType.FLOAT });
  const x = b.op('Unsqueeze', [f, b.constant('axes', 'int64', [1], [2])]);
  b.output(b.op('Expand', [x, b.constant('shape', 'int64', [3], [1, 1, 64])], {}, { outputs: ['logits'] }), 'float', ['batch', 'sequence', 64]);
  const file = path.join(dir, 'no-path.onnx');
  writeFileSync(file, encodeModel(b.build()));
  return file;
}

test('train: bad input is a clear error with its exit code, and no output file is written', { timeout: 180_000 }, () => {
  const write = (name: string, text: string) => { const f = path.join(dir, name); writeFileSync(f, text); return f; };
  const other = path.join(dir, 'ckpt-other');
  const okOther = runCli(['train', modelFile('wide.onnx', { vocab: 64, dim: 8 }), '--data', TOKENS, '-o', path.join(dir, 'wide-out.onnx'), '--steps', '1', '--max-len', '32', '--checkpoint-dir', other]);
  assert.equal(okOther.code, 0, okOther.stderr);
  const cases: Array<[string, string[], number, RegExp]> = [
    ['malformed JSONL', ['--data', write('bad.jsonl', '{"input_ids":[1,2,3]}\n{"input_ids":[1,2,\n')], 2, /line 2/],
    ['ids out of the vocabulary', ['--data', write('big.jsonl', '{"input_ids":[1,2,64]}\n')], 2, /input_ids\[2\] is 64, outside the model's vocabulary of 64/],
    ['empty data', ['--data', write('empty.jsonl', '')], 2, /has no rows/],
    ['Alpaca without tokenizer', ['--data', ALPACA], 2, /--tokenizer/],
    ['tokenizer that does not fit', ['--data', ALPACA, '--tokenizer', TOKENIZER, '--model', modelFile('tiny32.onnx', { vocab: 32 })], 2, /ids up to 44.*32 rows/],
    ['no trainable path', ['--model', noModelWithoutPath(), '--no-neftune'], 2, /parameter|trainable|initializer/i],
    ['resume from another model', ['--resume', other, '--steps', '2'], 2, /another model/],
    ['--steps with --epochs', ['--steps', '2', '--epochs', '1'], 2, /--steps or --epochs/],
  ];
  for (const [what, args, code, message] of cases) {
    const i = args.indexOf('--model');
    const model = i >= 0 ? args.splice(i, 2)[1]! : tiny();
    const out = path.join(dir, `bad-${what.replace(/\W+/g, '-')}.onnx`);
    const data = args.includes('--data') ? [] : ['--data', TOKENS];
    const steps = args.includes('--steps') ? [] : ['--steps', '1'];
    const r = runCli(['train', model, ...data, '-o', out, ...steps, '--max-len', '32', '--log', `${out}.csv`, ...args]);
    assert.equal(r.code, code, `${what}: exit ${r.code}\n${r.stderr}`);
    assert.match(r.stderr, message, what);
    assert.doesNotMatch(r.stderr, /internal error/, what);
    assert.ok(!existsSync(out) && !existsSync(`${out}.csv`), `${what}: no output file`);
  }
});

/** A folder holding copies of the run's inputs; returns their paths and a snapshot check (every file unchanged, nothing added). */
async function inputsFolder(name: string) {
  const at = path.join(dir, name);
  mkdirSync(at, { recursive: true });
  const files = {
    model: path.join(at, 'ext.onnx'), data: path.join(at, 'data.jsonl'), evalData: path.join(at, 'eval.jsonl'),
    tokenizer: path.join(at, 'tok', 'tokenizer.json'), alpaca: path.join(at, 'alpaca.json'),
  };
  await saveWithExternalData(buildTinyGpt({ vocab: 64 }), files.model, { threshold: 0 });
  copyFileSync(TOKENS, files.data);
  copyFileSync(TOKENS, files.evalData);
  mkdirSync(path.dirname(files.tokenizer));
  copyFileSync(TOKENIZER, files.tokenizer);
  copyFileSync(ALPACA, files.alpaca);
  const snapshot = () => {
    const all = new Map<string, string>();
    const walk = (d: string) => { for (const e of readdirSync(d, { withFileTypes: true })) { const f = path.join(d, e.name); if (e.isDirectory()) walk(f); else all.set(f, readFileSync(f).toString('base64')); } };
    walk(at);
    return all;
  };
  return { at, files, snapshot };
}

test('train: an output over any input (model, its data file, --data, --eval-data, --tokenizer, the checkpoint) is refused with exit 5 before training; nothing written', { timeout: 300_000 }, async () => {
  const { at, files: f, snapshot } = await inputsFolder('collide');
  const ckpt = path.join(at, 'ckpt');
  const made = runCli(['train', f.model, '--data', f.data, '-o', path.join(dir, 'collide-first.onnx'), '--steps', '2', '--max-len', '32', '--checkpoint-dir', ckpt]);
  assert.equal(made.code, 0, made.stderr);
  // A --data file named as the trained data copy of `-o out.onnx` beside the model.
  const dataNamedLikeCopy = path.join(at, 'out.onnx.data');
  copyFileSync(TOKENS, dataNamedLikeCopy);
  const before = snapshot();
  const cases: Array<[string, string[]]> = [
    ['-o over --data', ['-o', f.data]],
    ['--log over the model', ['--log', f.model]],
    ['--plot over --data', ['--plot', f.data]],
    ['--log over --eval-data', ['--eval-data', f.evalData, '--log', f.evalData]],
    ['-o over --eval-data', ['--eval-data', f.evalData, '-o', f.evalData]],
    ['-o over the model\'s data file', ['-o', `${f.model}.data`]],
    ['--log over the model\'s data file', ['--log', `${f.model}.data`]],
    ['the trained data copy over --data', ['--data', dataNamedLikeCopy, '-o', path.join(at, 'out.onnx')]],
    ['--plot over --tokenizer', ['--data', f.alpaca, '--tokenizer', f.tokenizer, '--plot', f.tokenizer]],
    ['-o over the checkpoint resumed from', ['--resume', ckpt, '--steps', '3', '-o', path.join(ckpt, 'LATEST')]],
    ['--log inside the checkpoint resumed from', ['--resume', ckpt, '--steps', '3', '--log', path.join(ckpt, 'step-00000002', 'checkpoint.json')]],
    ['--checkpoint-dir over --data', ['--data', path.join(ckpt, 'step-00000002', 'checkpoint.json'), '--checkpoint-dir', ckpt]],
  ];
  for (const [what, args] of cases) {
    const flags = ['--data', f.data, '-o', path.join(dir, 'collide-out.onnx'), '--steps', '2', '--max-len', '32'];
    for (const flag of ['--data', '-o', '--steps']) { const i = args.indexOf(flag); if (i >= 0) { const j = flags.indexOf(flag); flags.splice(j, 2); } }
    const r = runCli(['train', f.model, ...flags, ...args]);
    assert.equal(r.code, 5, `${what}: exit ${r.code}\n${r.stderr}`);
    assert.match(r.stderr, /Refusing to train: .*collide[\s\S]*would replace/, what);
    assert.deepEqual(snapshot(), before, `${what}: no input changed, nothing written`);
    assert.ok(!existsSync(path.join(dir, 'collide-out.onnx')), `${what}: no model written`);
  }
});

test('train: -o -, -o a folder and --checkpoint-dir on a file are usage errors before training; outputs naming the same file too', { timeout: 120_000 }, () => {
  const file = path.join(dir, 'a-file.txt');
  writeFileSync(file, 'x');
  const folder = path.join(dir, 'a-folder');
  mkdirSync(folder, { recursive: true });
  const out = path.join(dir, 'paths-out.onnx');
  const cases: Array<[string, string[], RegExp]> = [
    ['-o -', ['-o', '-'], /-o - \(stdout\) is not supported/],
    ['-o a folder', ['-o', folder], /is a folder; give a file name/],
    ['--log a folder', ['--log', folder], /--log .* is a folder/],
    ['--checkpoint-dir a file', ['--checkpoint-dir', file], /is a file, not a folder/],
    ['--checkpoint-dir below a file', ['--checkpoint-dir', path.join(file, 'ck')], /is a file, not a folder/],
    ['--log and --plot the same', ['--log', path.join(dir, 'same.txt'), '--plot', path.join(dir, 'same.txt')], /name the same file/],
  ];
  for (const [what, args, message] of cases) {
    const flags = args.includes('-o') ? [] : ['-o', out];
    const r = runCli(['train', tiny(), '--data', TOKENS, ...flags, '--steps', '2', '--max-len', '32', ...args]);
    assert.equal(r.code, 2, `${what}: exit ${r.code}\n${r.stderr}`);
    assert.match(r.stderr, message, what);
    assert.ok(!existsSync(out) && !existsSync(path.join(projectRoot, '-')) && !existsSync(path.join(dir, 'same.txt')), `${what}: nothing written`);
    assert.deepEqual(readdirSync(folder), [], `${what}: nothing written into the folder`);
  }
});

const jsonLines = (stdout: string) => stdout.trim().split('\n').filter(Boolean).map((l) => JSON.parse(l) as Record<string, any>);

test('train: a diverged run (NaN or infinite loss or weights) exits 9 naming the update, writes no model; --json ends with ok:false', { timeout: 180_000 }, () => {
  for (const args of [['--lr', '1e30', '--steps', '3'], ['--optimizer', 'sgd', '--lr', '50', '--steps', '20']]) {
    const out = path.join(dir, 'nan.onnx');
    const r = runCli(['train', tiny(), '--data', TOKENS, '-o', out, '--max-len', '32', '--json', ...args]);
    assert.equal(r.code, 9, `${args.join(' ')}: exit ${r.code}\n${r.stderr}`);
    assert.match(r.stderr, /Training diverged: .*update \d+/);
    const last = jsonLines(r.stdout).at(-1)!;
    assert.equal(last['type'], 'summary');
    assert.equal(last['ok'], false);
    assert.equal(last['error'].code, 'TRAINING_DIVERGED');
    assert.equal(typeof last['error'].step, 'number');
    assert.ok(!existsSync(out), 'no model written');
  }
});

test('train --json: any failure ends stdout with a summary object ok:false and the error', () => {
  const r = runCli(['train', tiny(), '--data', TOKENS, '-o', path.join(dir, 'never.onnx'), '--steps', '2', '--epochs', '1', '--json']);
  assert.equal(r.code, 2);
  assert.deepEqual(jsonLines(r.stdout), [{ type: 'summary', ok: false, exitCode: 2, error: { code: 'USAGE', exitCode: 2, message: 'Give --steps or --epochs, not both' } }]);
});

test('train --resume: a checkpoint with a changed byte, or holding NaN, is refused (exit 4) before training', { timeout: 120_000 }, async () => {
  const ckpt = path.join(dir, 'ckpt-damaged');
  const made = runCli(['train', tiny(), '--data', TOKENS, '-o', path.join(dir, 'damaged-first.onnx'), '--steps', '2', '--max-len', '32', '--checkpoint-dir', ckpt]);
  assert.equal(made.code, 0, made.stderr);
  const good = loadCheckpoint(ckpt);
  const nanDir = path.join(dir, 'ckpt-nan');
  const poisoned = good.tensors.map((t, i) => (i === 0 ? Tensor.fromArray(t.dataType, t.dims, new Float32Array(t.elementCount).fill(Number.NaN), t.name) : t));
  await saveCheckpoint(nanDir, { info: good.info, tensors: poisoned });
  const data = path.join(ckpt, 'step-00000002', 'checkpoint.onnx.data');
  const bytes = readFileSync(data);
  bytes[100]! ^= 0x01;
  writeFileSync(data, bytes);
  for (const [from, message] of [[ckpt, /damaged: its tensors do not match the checksum/], [nanDir, /NaN or infinite value/]] as const) {
    const out = path.join(dir, 'damaged-out.onnx');
    const r = runCli(['train', tiny(), '--data', TOKENS, '-o', out, '--steps', '4', '--max-len', '32', '--resume', from]);
    assert.equal(r.code, 4, r.stderr);
    assert.match(r.stderr, message);
    assert.ok(!existsSync(out));
  }
});

test('train --resume: settings come from the checkpoint (given ones must agree), the data must be the same, and the log continues with the earlier updates', { timeout: 180_000 }, () => {
  const ckpt = path.join(dir, 'ckpt-settings'), log = path.join(dir, 'settings.csv');
  const first = runCli(['train', tiny(), '--data', TOKENS, '-o', path.join(dir, 'settings-a.onnx'), '--steps', '6', '--batch', '4', '--lr', '0.01', '--checkpoint-dir', ckpt, '--checkpoint-every', '3', '--log', log]);
  assert.equal(first.code, 0, first.stderr);
  const full = readFileSync(log, 'utf8').trim().split('\n');
  assert.equal(full.length, 7);
  // Neither --steps, --max-len, --batch nor --lr: all from the checkpoint.
  const resumedLog = path.join(dir, 'settings-resumed.csv');
  const resumed = runCli(['train', tiny(), '--data', TOKENS, '-o', path.join(dir, 'settings-b.onnx'), '--resume', path.join(ckpt, 'step-00000003'), '--log', resumedLog]);
  assert.equal(resumed.code, 0, resumed.stderr);
  const lines = readFileSync(resumedLog, 'utf8').trim().split('\n');
  assert.deepEqual(lines.map((l) => l.split(',').slice(0, 3).join(',')), full.map((l) => l.split(',').slice(0, 3).join(',')), 'updates 1-6 with the same losses');
  const batch = runCli(['train', tiny(), '--data', TOKENS, '-o', path.join(dir, 'settings-c.onnx'), '--resume', ckpt, '--batch', '8']);
  assert.equal(batch.code, 2);
  assert.match(batch.stderr, /--batch 8 differs from the checkpoint's 4/);
  const changed = path.join(dir, 'changed.jsonl');
  const rows = readFileSync(TOKENS, 'utf8').split('\n');
  rows[5] = rows[5]!.replace(/\[(\d+)/, (_, n: string) => `[${(Number(n) + 1) % 64}`);
  writeFileSync(changed, rows.join('\n'));
  const other = runCli(['train', tiny(), '--data', changed, '-o', path.join(dir, 'settings-d.onnx'), '--resume', ckpt]);
  assert.equal(other.code, 2, other.stderr);
  assert.match(other.stderr, /trained on other data/);
  assert.ok(!existsSync(path.join(dir, 'settings-c.onnx')) && !existsSync(path.join(dir, 'settings-d.onnx')));
});

test('train --log is written as training goes: a run that stops keeps the updates it did', { timeout: 120_000 }, () => {
  const log = path.join(dir, 'stopped.csv');
  const r = runCli(['train', tiny(), '--data', TOKENS, '-o', path.join(dir, 'stopped.onnx'), '--steps', '5', '--lr', '1e30', '--log', log]);
  assert.equal(r.code, 9, r.stderr);
  assert.match(readFileSync(log, 'utf8'), /^run,step,loss,lr,alpha,tokens,seconds,eval_loss\nneftune,1,\d/);
});

test('train: --max-len defaults to the position table (said on stderr), a longer --max-len is refused before training', { timeout: 120_000 }, () => {
  const long = path.join(dir, 'long.jsonl');
  writeFileSync(long, `${JSON.stringify({ input_ids: Array.from({ length: 40 }, (_, i) => i % 64) })}\n`.repeat(12));
  const out = path.join(dir, 'long.onnx');
  const r = runCli(['train', tiny(), '--data', long, '-o', out, '--steps', '12', '--batch', '1']);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stderr, /--max-len 32: the model takes at most 32 tokens \(Gather "[^"]+" reads position table "transformer\.wpe\.weight" of 32 rows\)/);
  const alpaca = runCli(['train', tiny(), '--data', ALPACA, '--tokenizer', TOKENIZER, '-o', path.join(dir, 'al.onnx'), '--steps', '3']);
  assert.equal(alpaca.code, 0, alpaca.stderr);
  const tooLong = runCli(['train', tiny(), '--data', long, '-o', path.join(dir, 'long2.onnx'), '--steps', '2', '--max-len', '64']);
  assert.equal(tooLong.code, 2);
  assert.match(tooLong.stderr, /--max-len 64 is longer than the model allows: at most 32 tokens \(.*position table "transformer\.wpe\.weight" of 32 rows\)/);
});

test('train --loss passes through to the step: its messages name a flag train has', { timeout: 60_000 }, () => {
  const r = runCli(['train', tiny(), '--data', TOKENS, '-o', path.join(dir, 'loss.onnx'), '--steps', '1', '--loss', 'output:nope']);
  assert.equal(r.code, 2, r.stderr);
  assert.doesNotMatch(r.stderr, /Unknown argument/);
  assert.match(r.stderr, /nope/);
});

test('train: Ctrl-C (SIGINT) names the last checkpoint and how to resume, exit 130', { timeout: 120_000 }, async () => {
  const ckpt = path.join(dir, 'ckpt-sigint');
  const child = spawn(process.execPath, [cliPath, 'train', tiny(), '--data', TOKENS, '-o', path.join(dir, 'sigint.onnx'), '--steps', '100000', '--checkpoint-dir', ckpt, '--checkpoint-every', '2', '--json'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '', steps = 0;
  child.stderr.on('data', (d: Buffer) => { stderr += d.toString(); });
  const code = await new Promise<number | null>((resolve) => {
    child.stdout.on('data', (d: Buffer) => { steps += d.toString().split('\n').length - 1; if (steps >= 5) child.kill('SIGINT'); });
    child.on('exit', (c) => resolve(c));
  });
  assert.equal(code, 130);
  assert.match(stderr, /interrupted\. The last checkpoint is .*step-\d+ \(update \d+\); continue with the same command and --resume /);
});

const SCRIPT = ['/usr/bin/script', '/bin/script'].find((p) => existsSync(p));

test('on a terminal, progress is one bar redrawn in place with step, loss, tokens/s and time left', {
  skip: SCRIPT ? false : 'util-linux script(1) not found: no pseudo-terminal to run the CLI on',
  timeout: 60_000,
}, () => {
  const out = path.join(dir, 'tty.onnx');
  const command = [process.execPath, cliPath, 'train', tiny(), '--data', TOKENS, '-o', out, '--steps', '6', '--max-len', '32'].map((a) => `'${a.replace(/'/g, `'\\''`)}'`).join(' ');
  // script(1) runs the command on a pseudo-terminal: stderr is a TTY, as for a person at a shell.
  const r = spawnSync(SCRIPT!, ['-qfec', command, '/dev/null'], { encoding: 'utf8', timeout: 50_000 });
  assert.equal(r.status, 0, r.stdout + r.stderr);
  const frames = r.stdout.split('\r').filter((f) => f.includes('step '));
  assert.equal(frames.length, 6, `one redraw per update: ${JSON.stringify(r.stdout.slice(0, 300))}`);
  assert.match(frames[0]!, /^\[#*-+\] step 1\/6 {2}loss \d+\.\d{4} {2}\d+ tok\/s {2}\d+:\d\d left\x1b\[K$/);
  assert.match(frames[5]!, /^\[#+\] step 6\/6 /);
  assert.match(r.stdout, /fine-tuned 6 updates \(final loss \d+\.\d{4}\); wrote /);
  assert.ok(existsSync(out));
});

test('--eval-data on a model that takes position_ids: eval runs get positions 0..L-1 as training does', { timeout: 60_000 }, () => {
  const model = modelFile('tiny-pos.onnx', { positionIdsInput: true });
  const out = path.join(dir, 'pos.onnx');
  const r = runCli(['train', model, '--data', TOKENS, '--eval-data', TOKENS, '-o', out, '--steps', '10', '--max-len', '32', '--lr', '0.01', '--json']);
  assert.equal(r.code, 0, r.stderr);
  const evals = r.stdout.trim().split('\n').map((l) => JSON.parse(l) as { type: string; evalLoss?: number }).filter((l) => l.type === 'eval');
  assert.ok(evals.length >= 2, 'evaluated before and after training');
  assert.ok(evals.every((e) => Number.isFinite(e.evalLoss)));
  assert.ok(evals.at(-1)!.evalLoss! < evals[0]!.evalLoss!, `eval loss fell: ${evals.map((e) => e.evalLoss).join(' -> ')}`);
});
