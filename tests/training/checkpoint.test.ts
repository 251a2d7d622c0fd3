/**
 * Checkpoint directories: a saved checkpoint loads back exactly (large tensors in external data),
 * a resumed run from disk continues bit-identically, and a save killed at any moment leaves the
 * last complete checkpoint readable (stage ordering, and a child process killed mid-save).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync, renameSync, symlinkSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Trainer, type TrainerOrt } from '../../src/training/trainer.js';
import { CheckpointFormatError, type TrainingCheckpoint } from '../../src/training/checkpoint.js';
import { uniformCheckpoint } from './checkpoint-writer.js';
import { loadCheckpoint, saveCheckpoint } from '../../src/io/checkpoint-files.js';
import { tempDir } from '../cli-helpers.js';
import { ort } from './helpers.js';
import { tinyLm, tinyStep, tokenBatch } from './tiny-lm.js';

const cpu = ort as unknown as TrainerOrt;

function assertWhole(c: TrainingCheckpoint): number {
  const step = c.info.step;
  for (const t of c.tensors) assert.ok((t.toArray() as Float32Array).every((v) => v === step), `${t.name} holds step ${step} throughout`);
  assert.deepEqual(c.info.dataPosition, { step });
  return step;
}

test('checkpoint files: save and load round-trip; large tensors go to external data; old ones are pruned', async () => {
  const dir = tempDir('ckpt');
  await saveCheckpoint(dir, uniformCheckpoint(1));
  const last = await saveCheckpoint(dir, uniformCheckpoint(2));
  await saveCheckpoint(dir, uniformCheckpoint(3));
  assert.equal(assertWhole(loadCheckpoint(dir)), 3);
  assert.deepEqual(readdirSync(dir).sort(), ['LATEST', 'step-00000002', 'step-00000003']);
  assert.deepEqual(readdirSync(last).sort(), ['checkpoint.json', 'checkpoint.onnx', 'checkpoint.onnx.data']);
  assert.equal(assertWhole(loadCheckpoint(last)), 2, 'one checkpoint folder loads directly');
  writeFileSync(path.join(last, 'checkpoint.json'), '{"format":"x"}\n');
  assert.throws(() => loadCheckpoint(last), (e: unknown) => e instanceof CheckpointFormatError && /disagree/.test(e.message));
  assert.throws(() => loadCheckpoint(tempDir('empty')), /no LATEST file/);
});

test('checkpoint files: a save that dies at any stage leaves the previous checkpoint (or the new one) loadable', async () => {
  for (const stage of ['written', 'renamed', 'pointed'] as const) {
    const dir = tempDir('ckpt-stage');
    await saveCheckpoint(dir, uniformCheckpoint(1));
    await assert.rejects(saveCheckpoint(dir, uniformCheckpoint(2), { afterStage: (s) => { if (s === stage) throw new Error(`died at ${s}`); } }), /died/);
    assert.equal(assertWhole(loadCheckpoint(dir)), stage === 'pointed' ? 2 : 1, `died after ${stage}`);
    await saveCheckpoint(dir, uniformCheckpoint(3));
    assert.equal(assertWhole(loadCheckpoint(dir)), 3);
    assert.ok(!readdirSync(dir).some((e) => e.endsWith('.tmp')), 'the next save removes the stray temp folder');
  }
});

test('checkpoint files: saving the step LATEST names again (a run resumed at its last step) never leaves LATEST naming a missing folder', async () => {
  for (const stage of ['written', 'renamed', 'pointed'] as const) {
    const dir = tempDir('ckpt-same-step');
    await saveCheckpoint(dir, uniformCheckpoint(2));
    await assert.rejects(saveCheckpoint(dir, uniformCheckpoint(2), { afterStage: (s) => { if (s === stage) throw new Error(`died at ${s}`); } }), /died/);
    assert.equal(assertWhole(loadCheckpoint(dir)), 2, `died after ${stage}: LATEST still names a complete checkpoint`);
  }
  const dir = tempDir('ckpt-same-step-ok');
  await saveCheckpoint(dir, uniformCheckpoint(2));
  const again = await saveCheckpoint(dir, uniformCheckpoint(2));
  assert.equal(path.basename(again), 'step-00000002.1', 'the existing folder is not replaced');
  await saveCheckpoint(dir, uniformCheckpoint(3));
  assert.deepEqual(readdirSync(dir).sort(), ['LATEST', 'step-00000002.1', 'step-00000003'], 'pruning orders step-N.K after step-N');
  assert.equal(assertWhole(loadCheckpoint(dir)), 3);
});

test('checkpoint files: SIGKILL of a process mid-save never leaves an unreadable last checkpoint', { timeout: 120_000 }, async () => {
  const child = fileURLToPath(new URL('./checkpoint-writer.js', import.meta.url));
  for (let round = 0; round < 4; round++) {
    const dir = tempDir('ckpt-kill');
    const p = spawn(process.execPath, [child, dir], { stdio: ['ignore', 'pipe', 'inherit'] });
    // Kill once the writer has finished a few saves and is inside another (it saves in a loop).
    await new Promise<void>((resolve) => {
      let lines = 0;
      p.stdout.on('data', (d: Buffer) => { lines += d.toString().split('\n').length - 1; if (lines >= 3 + round) { p.kill('SIGKILL'); resolve(); } });
    });
    await new Promise((resolve) => p.on('exit', resolve));
    assert.ok(existsSync(path.join(dir, 'LATEST')));
    assert.ok(assertWhole(loadCheckpoint(dir)) >= 1);
  }
});

test('resume from disk: K steps, saveCheckpoint, loadCheckpoint, a new trainer to N equals N steps straight', { timeout: 120_000 }, async () => {
  const forward = tinyLm(true);
  const step = tinyStep(forward);
  const options = { ort: cpu, step, schedule: { kind: 'constant', lr: 0.01 }, alpha: { kind: 'constant', alpha: 5 }, seed: 4 } as const;
  const data = Array.from({ length: 6 }, (_, k) => tokenBatch(2, 8, k));
  const straight = await Trainer.create({ ...options, initial: forward });
  const want = [];
  for (const b of data) want.push((await straight.trainStep(b)).loss);
  const wantParams = await straight.parameters();
  const first = await Trainer.create({ ...options, initial: forward });
  const got = [];
  for (const b of data.slice(0, 2)) got.push((await first.trainStep(b)).loss);
  const dir = tempDir('ckpt-resume');
  await saveCheckpoint(dir, await first.checkpoint({ next: 2 }), { threshold: 256 });
  const resumed = await Trainer.create({ ort: cpu, step, resume: loadCheckpoint(dir) });
  for (const b of data.slice(2)) got.push((await resumed.trainStep(b)).loss);
  assert.deepEqual(got, want);
  const params = await resumed.parameters();
  params.forEach((t, i) => assert.ok(Buffer.from(t.rawBytes()).equals(Buffer.from(wantParams[i]!.rawBytes())), `${t.name} bit-identical`));
  await Promise.all([straight.release(), first.release(), resumed.release()]);
});

test('a hostile checkpoint folder: a data file that links outside it, a FIFO, or a linked info file is refused with a typed error, never read or waited on', { timeout: 60_000 }, async () => {
  const make = async (label: string) => {
    const dir = tempDir(`ckpt-hostile-${label}`);
    const folder = await saveCheckpoint(dir, uniformCheckpoint(1));
    return { dir, folder };
  };
  const outside = path.join(tempDir('ckpt-outside'), 'secret.bin');
  writeFileSync(outside, Buffer.alloc(1 << 16, 7));

  const linked = await make('link');
  renameSync(path.join(linked.folder, 'checkpoint.onnx.data'), path.join(linked.folder, 'moved'));
  symlinkSync(outside, path.join(linked.folder, 'checkpoint.onnx.data'));
  assert.throws(() => loadCheckpoint(linked.dir), (e: unknown) => e instanceof Error && 'code' in e && /checkpoint\.onnx\.data/.test(e.message));

  const fifo = await make('fifo');
  renameSync(path.join(fifo.folder, 'checkpoint.onnx.data'), path.join(fifo.folder, 'moved'));
  execFileSync('mkfifo', [path.join(fifo.folder, 'checkpoint.onnx.data')]);
  assert.throws(() => loadCheckpoint(fifo.dir), (e: unknown) => e instanceof Error && 'code' in e && /checkpoint\.onnx\.data/.test(e.message));

  const info = await make('info');
  renameSync(path.join(info.folder, 'checkpoint.json'), path.join(info.folder, 'moved.json'));
  symlinkSync(outside, path.join(info.folder, 'checkpoint.json'));
  assert.throws(() => loadCheckpoint(info.dir), (e: unknown) => e instanceof CheckpointFormatError && /no checkpoint\.json regular file \(it is a symbolic link\)/.test(e.message));
});
