/**
 * A NEFTune-patched ORT training-artifacts folder trains correctly on ONNX Runtime's own training
 * runtime (onnxruntime-web 1.19.2 TrainingSession, wasm): the patch is applied in process to
 * training_model.onnx; eval model, optimizer model and checkpoint are copied beside it.
 */
import { before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { writeFileSync } from 'node:fs';
import { encodeModel } from '../../src/graph/index.js';
import { applyNeftune } from '../../src/passes/index.js';
import { readModelFile, saveModelFile } from '../../src/io/index.js';
import { checkUniformNoise } from '../../src/verify/stats.js';
import { tempDir } from '../cli-helpers.js';
import {
  ARTIFACT_FILES, EMBEDDING_TABLE, HEAD_WEIGHT, LOOKUP_OUTPUT,
  buildOptimizerModel, buildTrainingArtifacts, copyArtifacts, makeBatch, type Batch, type TrainingArtifacts,
} from './build.js';
import { openTraining, skipWithoutTrainingRuntime, type HostTensor } from './ort-training.js';
import { assertAlphaZeroMatches, checkAppliedGradient, effectiveLearningRate, feedsFor, float32Bits as bits, floats, runSteps } from './checks.js';

const skip = skipWithoutTrainingRuntime();
const B = 2, L = 8;
const LR_SCALE = 300;
const LR = effectiveLearningRate(LR_SCALE);

describe('ORT training artifacts, patched with NEFTune, on ONNX Runtime\'s training runtime', { skip, timeout: 60_000 }, () => {
  // Created in the suite body, so tempDir's cleanup runs after the suite (not after the before hook).
  const root = skip ? '' : tempDir('artifacts');
  const cleanDir = path.join(root, 'clean'), patchedDir = path.join(root, 'patched');
  let artifacts: TrainingArtifacts;
  let batch: Batch;
  let feeds: Record<string, HostTensor>;

  before(async () => {
    artifacts = buildTrainingArtifacts(cleanDir, { learningRateScale: LR_SCALE });
    batch = makeBatch(artifacts, B, L);
    feeds = feedsFor(artifacts, batch);
    copyArtifacts(cleanDir, patchedDir, ['eval', 'optimizer', 'checkpoint']);
    const loaded = readModelFile(artifacts.files.training);
    const result = applyNeftune(loaded.model, { alphaInput: true });
    assert.deepEqual(result.warnings.filter((w) => /backward pass/.test(w)), [], 'a training model gets no eval-graph warning');
    assert.deepEqual(result.record.sites.map((s) => [s.table, s.value]), [[EMBEDDING_TABLE, LOOKUP_OUTPUT]]);
    await saveModelFile(loaded, path.join(patchedDir, ARTIFACT_FILES.training));
  });

  test('the runtime loads both folders; the patched one has the alpha input as a user input', async () => {
    const check = async (dir: string, alpha: string | undefined) => {
      const t = await openTraining(dir);
      try {
        assert.deepEqual([...t.trainingInputNames].sort(), ['input_ids', 'target', ...(alpha ? [alpha] : [])].sort());
        assert.deepEqual(t.trainingOutputNames, ['loss', LOOKUP_OUTPUT], 'gradient-flag outputs are the runtime\'s, not returned');
        assert.equal(t.alphaInput, alpha);
        assert.deepEqual(t.parameterSlots.map((s) => s.name), [EMBEDDING_TABLE, HEAD_WEIGHT]);
        const params = await t.parameters();
        for (const p of artifacts.parameters) assert.equal(bits(params[p.name]!), bits(p.values), `${p.name} comes from the checkpoint`);
      } finally {
        await t.release();
      }
    };
    await check(cleanDir, undefined);
    await check(patchedDir, 'neftune_alpha');
  });

  test('a C++ exception from the runtime arrives as an error with its message, not a bare number', async () => {
    const dir = path.join(root, 'bad-optimizer');
    copyArtifacts(cleanDir, dir);
    // Without first_order_moments: the input list the 1.19.2 runtime refuses for SGD.
    const optimizer = buildOptimizerModel({ learningRateScale: LR_SCALE });
    assert.equal(optimizer.graph.inputs.pop()?.name, 'first_order_moments');
    writeFileSync(path.join(dir, ARTIFACT_FILES.optimizer), encodeModel(optimizer));
    await assert.rejects(openTraining(dir), (error: Error) => {
      assert.match(error.message, /C\+\+ exception during TrainingSession\.create.*Invalid graph inputs[\s\S]*Expected: \[learning_rate, step, params, gradients, first_order_moments\]/);
      return true;
    });
  });

  test('alpha 0: loss, lookup output and parameter updates equal the unpatched folder\'s bit for bit', async () => {
    await assertAlphaZeroMatches(cleanDir, patchedDir, feeds);
  });

  test('alpha 5: the loss changes, and the gradient ORT applied is the one of the noisy embedding', async () => {
    const clean = await runSteps(cleanDir, feeds, 1);
    const noisy = await runSteps(patchedDir, feeds, 1, 5);
    const [c, n] = [clean.steps[0]!, noisy.steps[0]!];
    assert.notEqual(n.loss, c.loss, 'the loss differs from the unpatched one');
    const noise = checkUniformNoise(n.lookup.map((x, i) => x - c.lookup[i]!), 5 / Math.sqrt(L * artifacts.dim));
    assert.ok(noise.ok, `the lookup output carries NEFTune noise: ${noise.failures.join('; ')}`);

    // Premise: unpatched, the update is LR times the gradient (LR as the 1.19.2 runtime feeds it, scaled by the graph).
    const plain = checkAppliedGradient(artifacts, batch, LR, clean.start, c.params, c.lookup);
    assert.ok(plain.worst <= 1, `unpatched: update = ${LR} * gradient (worst ${plain.worst.toFixed(3)} x tolerance at ${plain.where})`);
    const applied = checkAppliedGradient(artifacts, batch, LR, noisy.start, n.params, n.lookup);
    assert.ok(applied.worst <= 1, `alpha 5: update = LR * gradient of the noisy embedding (worst ${applied.worst.toFixed(3)} x tolerance at ${applied.where})`);
    assert.ok(Math.abs(applied.loss - n.loss) <= 1e-6 * applied.loss, `and the loss is the noisy embedding's (${n.loss} vs ${applied.loss})`);
    // The check can tell: the clean embedding's gradient is far outside the tolerance of the noisy update.
    const wrong = checkAppliedGradient(artifacts, batch, LR, noisy.start, n.params, c.lookup);
    assert.ok(wrong.worst > 100, `the clean gradient would not pass (off by ${wrong.worst.toFixed(0)} x tolerance)`);
  });

  test('alpha 5: the loss falls over 40 steps', async () => {
    const t = await openTraining(patchedDir);
    try {
      const evalLoss = async () => floats((await t.evalStep(feeds))['loss'])[0]!;
      const before = await evalLoss();
      const losses: number[] = [];
      for (let i = 0; i < 40; i++) losses.push(floats((await t.step(feeds, { alpha: 5 }))['loss'])[0]!);
      const after = await evalLoss();
      const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
      assert.ok(mean(losses.slice(-5)) < 0.5 * mean(losses.slice(0, 5)), `training loss: first ${losses.slice(0, 5).map((x) => x.toFixed(4))}, last ${losses.slice(-5).map((x) => x.toFixed(4))}`);
      assert.ok(after < 0.5 * before, `eval (clean) loss falls: ${before} -> ${after}`);
    } finally {
      await t.release();
    }
  });
});
