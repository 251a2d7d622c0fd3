/**
 * Checks shared by the training-artifacts tests (library level and CLI level): run SGD steps on a
 * folder, and compare the update ONNX Runtime applied with the gradient recomputed in JS.
 */
import assert from 'node:assert/strict';
import { EMBEDDING_TABLE, HEAD_WEIGHT, LOOKUP_OUTPUT, referenceStep, type Batch, type TrainingArtifacts } from './build.js';
import { RUNTIME_LEARNING_RATE, floatTensor, int64Tensor, openTraining, type HostTensor } from './ort-training.js';

/** The learning rate SGD applies in a folder built with `learningRateScale`: Mul(0.001f, scale) in float32. */
export const effectiveLearningRate = (learningRateScale: number): number =>
  Math.fround(Math.fround(RUNTIME_LEARNING_RATE) * Math.fround(learningRateScale));

export const feedsFor = (artifacts: Pick<TrainingArtifacts, 'classes'>, batch: Batch): Record<string, HostTensor> => ({
  input_ids: int64Tensor(batch.ids, [batch.batch, batch.sequence]),
  target: floatTensor(batch.target, [batch.batch, batch.sequence, artifacts.classes]),
});

export const floats = (t: HostTensor | undefined): Float32Array => t!.data as Float32Array;
/** Hex of the bytes: equal strings mean bit-identical floats. */
export const float32Bits = (x: Float32Array): string => Buffer.from(x.buffer, x.byteOffset, x.byteLength).toString('hex');

export interface StepRecord {
  loss: number;
  /** The lookup output the step's backward read (noisy when patched). */
  lookup: Float32Array;
  /** Trainable parameters after the step's update. */
  params: Record<string, Float32Array>;
}

/**
 * Opens a fresh session of `dir` and runs `steps` SGD steps on the same feeds (with `alpha` when the
 * folder is patched with an alpha input). Returns the parameters before and a record per step.
 */
export async function runSteps(dir: string, feeds: Record<string, HostTensor>, steps: number, alpha?: number): Promise<{ start: Record<string, Float32Array>; steps: StepRecord[] }> {
  const t = await openTraining(dir);
  try {
    const start = await t.parameters();
    const records: StepRecord[] = [];
    for (let i = 0; i < steps; i++) {
      const out = await t.step(feeds, alpha === undefined ? {} : { alpha });
      records.push({ loss: floats(out['loss'])[0]!, lookup: floats(out[LOOKUP_OUTPUT]), params: await t.parameters() });
    }
    return { start, steps: records };
  } finally {
    await t.release();
  }
}

/** Distance from |x| to the next float32 above it. */
export function float32Ulp(x: number): number {
  const f = new Float32Array([Math.abs(x)]);
  new Uint32Array(f.buffer)[0]! += 1;
  return f[0]! - Math.abs(Math.fround(x));
}

export interface GradientCheck {
  /** Largest |applied - reference| / tolerance over all elements: <= 1 passes. */
  worst: number;
  where: string;
  /** The reference loss (float64) from the given activation. */
  loss: number;
}

/**
 * Compares the gradient one SGD step applied, (before - after) / lr, with the gradient recomputed in
 * float64 from `activation` (the lookup output the step used) and the parameters before the step.
 *
 * Tolerance per element: the update is rounded once to float32, so before - after is off by at most
 * one ulp of the larger of the two, i.e. ulp / lr in the recovered gradient (2e-7 for values near 0.5
 * and lr 0.3); the float32 forward and backward (sums of a few dozen terms) add far less, covered by
 * 1e-6 * max|reference gradient|.
 */
export function checkAppliedGradient(
  artifacts: Pick<TrainingArtifacts, 'vocab' | 'dim' | 'classes'>, batch: Batch, lr: number,
  before: Record<string, Float32Array>, after: Record<string, Float32Array>, activation: Float32Array,
): GradientCheck {
  const ref = referenceStep(artifacts, batch, activation, before[HEAD_WEIGHT]!);
  let worst = 0, where = '';
  for (const name of [EMBEDDING_TABLE, HEAD_WEIGHT]) {
    const want = ref.gradients[name]!;
    const scale = want.reduce((m, x) => Math.max(m, Math.abs(x)), 0);
    for (let i = 0; i < want.length; i++) {
      const b = before[name]![i]!, a = after[name]![i]!;
      const tol = float32Ulp(Math.max(Math.abs(b), Math.abs(a))) / lr + 1e-6 * scale;
      const ratio = Math.abs((b - a) / lr - want[i]!) / tol;
      if (ratio > worst) { worst = ratio; where = `${name}[${i}]: applied ${(b - a) / lr}, reference ${want[i]}`; }
    }
  }
  return { worst, where, loss: ref.loss };
}

/**
 * Runs `steps` training steps on the unpatched folder and on the patched one at alpha 0, and
 * asserts loss, lookup output and parameter updates are bit-identical (and that the step updates).
 */
export async function assertAlphaZeroMatches(cleanDir: string, patchedDir: string, feeds: Record<string, HostTensor>, steps = 3): Promise<void> {
  const clean = await runSteps(cleanDir, feeds, steps);
  const zero = await runSteps(patchedDir, feeds, steps, 0);
  for (let i = 0; i < steps; i++) {
    const [z, c] = [zero.steps[i]!, clean.steps[i]!];
    assert.equal(float32Bits(new Float32Array([z.loss])), float32Bits(new Float32Array([c.loss])), `step ${i}: loss`);
    assert.equal(float32Bits(z.lookup), float32Bits(c.lookup), `step ${i}: ${LOOKUP_OUTPUT}`);
    for (const name of [EMBEDDING_TABLE, HEAD_WEIGHT]) assert.equal(float32Bits(z.params[name]!), float32Bits(c.params[name]!), `step ${i}: ${name} after the update`);
  }
  assert.notEqual(float32Bits(clean.steps[0]!.params[HEAD_WEIGHT]!), float32Bits(clean.start[HEAD_WEIGHT]!), 'the step did update the parameters');
}
