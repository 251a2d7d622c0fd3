/** The trainer tests' tiny causal LM (the builder GPT, vocab 64, d 16) and deterministic token batches. */
import type { Model } from '../../src/graph/index.js';
import { applyNeftune } from '../../src/passes/index.js';
import { IGNORE_INDEX, type TokenBatch } from '../../src/training/batch.js';
import { buildTrainingStep, type TrainingStep, type TrainingStepOptions } from '../../src/training/step.js';
import { buildTinyGpt } from '../../examples/models.js';

export const VOCAB = 64;

/** The forward model, patched with an alpha input when `neftune`. */
export function tinyLm(neftune = false): Model {
  const m = buildTinyGpt({ vocab: VOCAB });
  if (neftune) applyNeftune(m, { alphaInput: true });
  return m;
}

export function tinyStep(forward: Model, options: Partial<TrainingStepOptions> = {}): TrainingStep {
  return buildTrainingStep(forward, { optimizer: 'adamw', loss: 'causal-lm', ...options });
}

/** Rows of a repeating pattern (learnable), `rows` x `length`, no padding; `offset` picks the rows. */
export function tokenBatch(rows: number, length: number, offset = 0): TokenBatch {
  const ids = BigInt64Array.from({ length: rows * length }, (_, i) => {
    const r = Math.floor(i / length) + offset, j = i % length;
    return BigInt((r * 5 + j * 3) % VOCAB);
  });
  return { batch: rows, length, inputIds: ids, attentionMask: new BigInt64Array(rows * length).fill(1n), labels: ids.map((x) => x), tokens: rows * length };
}

/** Rows `from`..`to` of a batch, as their own batch. */
export function rowsOf(b: TokenBatch, from: number, to: number): TokenBatch {
  const cut = (a: BigInt64Array) => a.slice(from * b.length, to * b.length);
  return { batch: to - from, length: b.length, inputIds: cut(b.inputIds), attentionMask: cut(b.attentionMask), labels: cut(b.labels), tokens: (to - from) * b.length };
}

export { IGNORE_INDEX };
