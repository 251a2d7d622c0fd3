/**
 * `neftune patch <artifacts folder> -o <out>` writes a whole ORT training-artifacts folder (issue 10
 * #6): training_model.onnx patched, every other file copied unchanged, so ONNX Runtime's training
 * runtime loads `out` and trains on the noisy embedding; `strip` gives the original folder back.
 * Everything runs the real CLI on real files; the training runs on onnxruntime-web 1.19.2's
 * TrainingSession (see train.test.ts for the same at library level).
 */
import { before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, readdirSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { encodeModel } from '../../src/graph/index.js';
import { saveWithExternalData } from '../../src/io/index.js';
import { checkUniformNoise } from '../../src/verify/stats.js';
import { runCli, runCliJson, tempDir } from '../cli-helpers.js';
import { sameBytes } from '../helpers.js';
import { ARTIFACT_FILES, EMBEDDING_TABLE, buildOptimizerModel, buildTrainingArtifacts, buildTrainingModel, makeBatch, type Batch, type TrainingArtifacts } from './build.js';
import { openTraining, skipWithoutTrainingRuntime, type HostTensor } from './ort-training.js';
import { assertAlphaZeroMatches, checkAppliedGradient, effectiveLearningRate, feedsFor, float32Bits as bits, floats, runSteps } from './checks.js';

const read = (p: string) => new Uint8Array(readFileSync(p));
/** Every entry under `dir`, relative, sorted (folders included). */
const tree = (dir: string) => readdirSync(dir, { recursive: true }).map((p) => String(p).split(path.sep).join('/')).sort();
const OTHERS = [ARTIFACT_FILES.checkpoint, ARTIFACT_FILES.eval, ARTIFACT_FILES.optimizer] as const;
const ALL_FOUR = [...OTHERS, ARTIFACT_FILES.training].sort();

const skip = skipWithoutTrainingRuntime();
const B = 2, L = 8;
const LR_SCALE = 300;
const LR = effectiveLearningRate(LR_SCALE);

describe('`neftune patch <artifacts> -o out --alpha-input` gives a folder ONNX Runtime trains on', { skip, timeout: 120_000 }, () => {
  // Created in the suite body, so tempDir's cleanup runs after the suite (not after the before hook).
  const root = skip ? '' : tempDir('cli-folder');
  const cleanDir = path.join(root, 'clean'), outDir = path.join(root, 'out'), restoredDir = path.join(root, 'restored');
  let artifacts: TrainingArtifacts;
  let batch: Batch;
  let feeds: Record<string, HostTensor>;

  before(() => {
    artifacts = buildTrainingArtifacts(cleanDir, { learningRateScale: LR_SCALE });
    batch = makeBatch(artifacts, B, L);
    feeds = feedsFor(artifacts, batch);
    const r = runCliJson(['patch', cleanDir, '-o', outDir, '--alpha-input']);
    assert.equal(r.code, 0, r.stderr + r.stdout);
  });

  test('out holds all four files; the three others are byte-identical copies; the report lists them', () => {
    assert.deepEqual(tree(outDir), ALL_FOUR);
    for (const name of OTHERS) assert.ok(sameBytes(read(path.join(outDir, name)), read(path.join(cleanDir, name))), `${name} is copied unchanged`);
    assert.ok(!sameBytes(read(path.join(outDir, ARTIFACT_FILES.training)), read(artifacts.files.training)), 'training_model.onnx is the patched one');
    // The report, from a dry run of the same command and from a second run over the finished folder.
    const again = runCliJson(['patch', cleanDir, '-o', outDir, '--alpha-input']);
    assert.equal(again.code, 0, again.stdout);
    const file = again.json.files[0];
    assert.equal(file.status, 'patched');
    assert.deepEqual(file.copied, [...OTHERS], 'files already there with the same bytes are part of the folder');
    assert.match(file.note, /training artifacts folder: only training_model\.onnx is processed, and the folder's other files are copied unchanged/);
    const text = runCli(['patch', cleanDir, '-o', outDir, '--alpha-input']);
    assert.match(text.stdout, /copied 3 files of the folder: checkpoint, eval_model\.onnx, optimizer_model\.onnx/);
  });

  test('alpha 0: the loss and the parameter updates equal the unpatched folder\'s bit for bit', async () => {
    await assertAlphaZeroMatches(cleanDir, outDir, feeds);
  });

  test('alpha 5: the loss differs, and the gradient ORT applied is the one of the noisy embedding', async () => {
    const clean = await runSteps(cleanDir, feeds, 1);
    const noisy = await runSteps(outDir, feeds, 1, 5);
    const [c, n] = [clean.steps[0]!, noisy.steps[0]!];
    assert.notEqual(n.loss, c.loss, 'the loss differs from the unpatched one');
    const noise = checkUniformNoise(n.lookup.map((x, i) => x - c.lookup[i]!), 5 / Math.sqrt(L * artifacts.dim));
    assert.ok(noise.ok, `the lookup output carries NEFTune noise: ${noise.failures.join('; ')}`);
    const applied = checkAppliedGradient(artifacts, batch, LR, noisy.start, n.params, n.lookup);
    assert.ok(applied.worst <= 1, `update = LR * gradient of the noisy embedding (worst ${applied.worst.toFixed(3)} x tolerance at ${applied.where})`);
    assert.ok(Math.abs(applied.loss - n.loss) <= 1e-6 * applied.loss, `the loss is the noisy embedding's (${n.loss} vs ${applied.loss})`);
    const wrong = checkAppliedGradient(artifacts, batch, LR, noisy.start, n.params, c.lookup);
    assert.ok(wrong.worst > 100, `the clean embedding's gradient would not pass (off by ${wrong.worst.toFixed(0)} x tolerance)`);
  });

  test('alpha 5: the loss falls over 40 steps (the copied optimizer and checkpoint do their part)', async () => {
    const t = await openTraining(outDir);
    try {
      const evalLoss = async () => floats((await t.evalStep(feeds))['loss'])[0]!;
      const start = await evalLoss();
      const losses: number[] = [];
      for (let i = 0; i < 40; i++) losses.push(floats((await t.step(feeds, { alpha: 5 }))['loss'])[0]!);
      const end = await evalLoss();
      const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
      assert.ok(mean(losses.slice(-5)) < 0.5 * mean(losses.slice(0, 5)), `training loss: first ${losses.slice(0, 5).map((x) => x.toFixed(4))}, last ${losses.slice(-5).map((x) => x.toFixed(4))}`);
      assert.ok(end < 0.5 * start, `eval (clean) loss falls: ${start} -> ${end}`);
    } finally {
      await t.release();
    }
  });

  test('`strip out -o restored` gives the original folder back, byte for byte', async () => {
    const r = runCliJson(['strip', outDir, '-o', restoredDir]);
    assert.equal(r.code, 0, r.stdout);
    assert.equal(r.json.files[0].status, 'stripped');
    assert.deepEqual(r.json.files[0].copied, [...OTHERS]);
    assert.deepEqual(tree(restoredDir), ALL_FOUR);
    for (const name of ALL_FOUR) assert.ok(sameBytes(read(path.join(restoredDir, name)), read(path.join(cleanDir, name))), `${name} is the original`);
    const [clean, restored] = [await runSteps(cleanDir, feeds, 1), await runSteps(restoredDir, feeds, 1)];
    assert.equal(bits(restored.steps[0]!.params[EMBEDDING_TABLE]!), bits(clean.steps[0]!.params[EMBEDDING_TABLE]!), 'and trains like the original');
  });
});

describe('an artifacts folder is copied whole or not at all', { timeout: 60_000 }, () => {
  const root = tempDir('cli-folder-files');
  const at = (...parts: string[]) => path.join(root, ...parts);

  test('a folder whose training model cannot be patched writes nothing and reports the folder rule', () => {
    const dir = at('no-embedding');
    buildTrainingArtifacts(dir);
    // A training_model.onnx without any embedding lookup (the optimizer graph under the wrong name).
    writeFileSync(path.join(dir, ARTIFACT_FILES.training), encodeModel(buildOptimizerModel()));
    const out = at('no-embedding-out');
    const r = runCliJson(['patch', dir, '-o', out]);
    assert.equal(r.code, 3, r.stdout);
    const file = r.json.files[0];
    assert.equal(file.status, 'failed');
    assert.equal(file.error.code, 'NO_EMBEDDING');
    assert.match(file.note, /training artifacts folder: only training_model\.onnx is processed.*nothing is copied when it fails/);
    assert.deepEqual(file.copied, []);
    assert.ok(!existsSync(out), 'nothing was written: an output folder of copies alone is no training folder');
    const text = runCli(['patch', dir, '-o', out]);
    assert.equal(text.code, 3);
    assert.match(text.stderr, /failed .*training_model\.onnx: No token embedding[\s\S]*\n {2}ONNX Runtime training artifacts folder: .*nothing is copied when it fails/);
    assert.ok(!existsSync(out));
  });

  test('subfolders and other files are copied; links and FIFOs are listed as skipped, never followed', () => {
    const dir = at('extras');
    buildTrainingArtifacts(dir);
    mkdirSync(path.join(dir, 'data', 'deep'), { recursive: true });
    writeFileSync(path.join(dir, 'data', 'deep', 'weights.bin'), 'weights');
    writeFileSync(path.join(dir, 'README'), 'notes');
    const secret = at('secret.txt');
    writeFileSync(secret, 'outside the folder');
    symlinkSync(secret, path.join(dir, 'link.txt'));
    symlinkSync(path.dirname(secret), path.join(dir, 'linked-folder'));
    assert.equal(spawnSync('mkfifo', [path.join(dir, 'pipe')]).status, 0);
    const out = at('extras-out');
    const r = runCliJson(['patch', dir, '-o', out]);
    assert.equal(r.code, 0, r.stdout);
    assert.deepEqual(r.json.files[0].copied, ['README', ...OTHERS, 'data/deep/weights.bin'].sort());
    const skipped = Object.fromEntries(r.json.skipped.map((s: { path: string; reason: string }) => [path.basename(s.path), s.reason]));
    assert.deepEqual(Object.keys(skipped).sort(), ['link.txt', 'linked-folder', 'pipe']);
    assert.match(skipped['link.txt'], /symbolic link: not followed, so it is not copied/);
    assert.match(skipped['pipe'], /FIFO.*never opened, so it is not copied/);
    assert.deepEqual(tree(out), ['README', ...ALL_FOUR, 'data', 'data/deep', 'data/deep/weights.bin'].sort());
    assert.equal(readFileSync(path.join(out, 'data', 'deep', 'weights.bin'), 'utf8'), 'weights');
  });

  test('an output folder inside the artifacts folder is not copied into itself', () => {
    const dir = at('nested-out');
    buildTrainingArtifacts(dir);
    const out = path.join(dir, 'patched');
    assert.equal(runCli(['patch', dir, '-o', out]).code, 0);
    const again = runCliJson(['patch', dir, '-o', out]);
    assert.equal(again.code, 0, again.stdout);
    assert.deepEqual(again.json.files[0].copied, [...OTHERS]);
    assert.deepEqual(again.json.skipped.map((s: { path: string; reason: string }) => [s.path, s.reason]), [[out, 'the output folder of this run: not copied into itself']]);
    assert.deepEqual(tree(out), ALL_FOUR);
  });

  test('a different file in the way is refused: up front by size, else when compared, and what was copied is removed', () => {
    const dir = at('in-the-way');
    buildTrainingArtifacts(dir);
    mkdirSync(path.join(dir, 'z'));
    writeFileSync(path.join(dir, 'z', 'last.bin'), 'AAAA');
    // Different size: refused while planning, nothing written.
    const bySize = at('in-the-way-size');
    mkdirSync(bySize);
    writeFileSync(path.join(bySize, ARTIFACT_FILES.eval), 'other');
    const r = runCliJson(['patch', dir, '-o', bySize]);
    assert.equal(r.code, 5, r.stdout);
    assert.match(r.json.files[0].error.message, /eval_model\.onnx is a different file[\s\S]*Nothing of the folder was written/);
    assert.deepEqual(r.json.files[0].copied, []);
    assert.deepEqual(tree(bySize), [ARTIFACT_FILES.eval]);
    // Same size, other bytes, copied last: found when compared; the files copied before it are removed.
    const byBytes = at('in-the-way-bytes');
    mkdirSync(path.join(byBytes, 'z'), { recursive: true });
    writeFileSync(path.join(byBytes, 'z', 'last.bin'), 'BBBB');
    const s = runCliJson(['patch', dir, '-o', byBytes]);
    assert.equal(s.code, 5, s.stdout);
    assert.match(s.json.files[0].error.message, /Refusing to overwrite .*z\/last\.bin .*a different file is already there/);
    assert.deepEqual(tree(byBytes), ['z', 'z/last.bin']);
    assert.equal(readFileSync(path.join(byBytes, 'z', 'last.bin'), 'utf8'), 'BBBB');
  });

  test('a symbolic link where a copy goes (file or folder) is refused, never written through', () => {
    const dir = at('links-in-out');
    buildTrainingArtifacts(dir);
    mkdirSync(path.join(dir, 'data'));
    writeFileSync(path.join(dir, 'data', 'w.bin'), 'w');
    const elsewhere = at('links-elsewhere');
    mkdirSync(elsewhere);
    const target = path.join(elsewhere, ARTIFACT_FILES.checkpoint);
    writeFileSync(target, readFileSync(path.join(dir, ARTIFACT_FILES.checkpoint)));
    const out = at('links-out');
    mkdirSync(out);
    symlinkSync(target, path.join(out, ARTIFACT_FILES.checkpoint));
    symlinkSync(elsewhere, path.join(out, 'data'));
    const r = runCliJson(['patch', dir, '-o', out]);
    assert.equal(r.code, 5, r.stdout);
    const message = r.json.files[0].error.message;
    assert.match(message, /links-out\/checkpoint is a symbolic link; files of the folder are copied only as regular files/);
    assert.match(message, /links-out\/data is a symbolic link; files of the folder are copied only into real folders/);
    assert.deepEqual(readdirSync(out).sort(), [ARTIFACT_FILES.checkpoint, 'data'], 'nothing written');
    assert.deepEqual(readdirSync(elsewhere), [ARTIFACT_FILES.checkpoint], 'nothing written through the link');
  });

  test('when training_model.onnx cannot be written, the copies made for it are removed', () => {
    const dir = at('save-fails');
    buildTrainingArtifacts(dir);
    const out = at('save-fails-out');
    // A non-empty folder where training_model.onnx goes: the rename into place fails.
    mkdirSync(path.join(out, ARTIFACT_FILES.training, 'x'), { recursive: true });
    const r = runCliJson(['patch', dir, '-o', out]);
    assert.equal(r.code, 7, r.stdout);
    assert.equal(r.json.files[0].error.code, 'WRITE_FAILED');
    assert.deepEqual(r.json.files[0].copied, []);
    assert.deepEqual(tree(out), [ARTIFACT_FILES.training, `${ARTIFACT_FILES.training}/x`]);
  });

  test('copies collide like other outputs: refused up front, nothing written', () => {
    const dir = at('collide');
    buildTrainingArtifacts(dir);
    // Another batch folder whose eval_model.onnx lands where the artifacts' copy goes.
    const other = at('collide-other');
    mkdirSync(other);
    writeFileSync(path.join(other, ARTIFACT_FILES.eval), readFileSync(path.join(dir, ARTIFACT_FILES.training)));
    const out = at('collide-out');
    const r = runCliJson(['patch', dir, other, '-o', out]);
    assert.equal(r.code, 2, r.stdout);
    assert.match(r.json.error.message, /eval_model\.onnx would be written 2 times: copy of .*collide\/eval_model\.onnx, output of .*collide-other\/eval_model\.onnx/);
    assert.ok(!existsSync(out));
    // A copy over a model this run reads.
    const reader = at('collide-reader');
    mkdirSync(reader);
    writeFileSync(path.join(reader, ARTIFACT_FILES.eval), readFileSync(path.join(dir, ARTIFACT_FILES.training)));
    const s = runCliJson(['patch', dir, path.join(reader, ARTIFACT_FILES.eval), '-o', reader]);
    assert.equal(s.code, 2, s.stdout);
    assert.match(s.json.error.message, /collide-reader\/eval_model\.onnx \(copy of .*\) would replace .*collide-reader\/eval_model\.onnx, an input of this run/);
    assert.deepEqual(tree(reader), [ARTIFACT_FILES.eval]);
  });

  test('--in-place patches training_model.onnx in place and copies nothing; a dry run lists what it would copy', () => {
    const dir = at('in-place');
    buildTrainingArtifacts(dir);
    const before = Object.fromEntries(OTHERS.map((n) => [n, read(path.join(dir, n))]));
    const dry = runCliJson(['patch', dir, '-o', at('in-place-dry'), '--dry-run']);
    assert.equal(dry.code, 0, dry.stdout);
    assert.equal(dry.json.files[0].status, 'dry-run');
    assert.deepEqual(dry.json.files[0].copied, [...OTHERS]);
    assert.match(runCli(['patch', dir, '--dry-run']).stdout, /would copy 3 files of the folder: checkpoint, eval_model\.onnx, optimizer_model\.onnx/);
    assert.ok(!existsSync(at('in-place-dry')));
    const r = runCliJson(['patch', dir, '--in-place']);
    assert.equal(r.code, 0, r.stdout);
    assert.equal(r.json.files[0].status, 'patched');
    assert.deepEqual(r.json.files[0].copied, []);
    assert.match(r.json.files[0].note, /only training_model\.onnx is processed \(in place\); the folder's other files stay as they are/);
    assert.deepEqual(tree(dir), ALL_FOUR, 'no file added');
    for (const n of OTHERS) assert.ok(sameBytes(read(path.join(dir, n)), before[n]!), `${n} untouched`);
  });

  test('external data: the training model\'s is carried by its save, the other files\' is copied; both are listed', async () => {
    const dir = at('external');
    buildTrainingArtifacts(dir);
    await saveWithExternalData(buildTrainingModel(), path.join(dir, ARTIFACT_FILES.training), { threshold: 1 });
    const data = `${ARTIFACT_FILES.training}.data`;
    assert.ok(existsSync(path.join(dir, data)));
    const out = at('external-out');
    const r = runCliJson(['patch', dir, '-o', out]);
    assert.equal(r.code, 0, r.stdout);
    assert.deepEqual(r.json.files[0].copied, [...OTHERS, data].sort());
    assert.deepEqual(tree(out), [...ALL_FOUR, data].sort());
    for (const n of [...OTHERS, data]) assert.ok(sameBytes(read(path.join(out, n)), read(path.join(dir, n))), `${n} copied unchanged`);
    const inspect = runCliJson(['inspect', path.join(out, ARTIFACT_FILES.training)]);
    assert.equal(inspect.code, 0, inspect.stdout);
    assert.ok(inspect.json.files[0].model.patched);
    assert.deepEqual(inspect.json.files[0].model.externalData.map((d: { location: string; present: boolean }) => [d.location, d.present]), [[data, true]]);
  });

  test('an artifacts folder nested in a batch folder is written whole too; its other models are not patched', () => {
    const batch = at('batch');
    const art = buildTrainingArtifacts(path.join(batch, 'run1'));
    writeFileSync(path.join(batch, 'model.onnx'), readFileSync(art.files.training));
    const out = at('batch-out');
    const r = runCliJson(['patch', batch, '-o', out]);
    assert.equal(r.code, 0, r.stdout);
    assert.deepEqual(r.json.files.map((f: { input: string; copied: string[] }) => [path.relative(batch, f.input), f.copied]),
      [['model.onnx', []], ['run1/training_model.onnx', [...OTHERS]]]);
    assert.deepEqual(tree(out), ['model.onnx', 'run1', ...ALL_FOUR.map((n) => `run1/${n}`)].sort());
    for (const n of OTHERS) assert.ok(sameBytes(read(path.join(out, 'run1', n)), read(path.join(batch, 'run1', n))), `${n} copied, not patched`);
    assert.ok(statSync(path.join(out, 'run1', ARTIFACT_FILES.training)).size > statSync(art.files.training).size, 'the training model is patched');
  });
});
