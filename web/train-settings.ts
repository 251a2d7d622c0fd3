/** The Train tab's settings and their bounds in words: shared by the page (train.ts) and the run (train-run.ts). */

/** The bundled model: vocabulary of the bundled data (examples/make-data.ts TINY_TOKENS) and its longest rows. */
export const TINY_MODEL = { vocab: 64, maxPositions: 32 } as const;
export const BUNDLED_DATA = 'tiny-tokens.jsonl';

export interface TrainSettings {
  steps: number;
  batchSize: number;
  lr: number;
  schedule: 'constant' | 'linear' | 'cosine';
  optimizer: 'adamw' | 'sgd';
  /** NEFTune alpha; null: no NEFTune (the model is not patched). */
  alpha: number | null;
  seed: number;
  /** Also train without NEFTune (same seed, same batches) and draw both curves. */
  compare: boolean;
}

export const DEFAULT_SETTINGS: TrainSettings = { steps: 80, batchSize: 8, lr: 0.02, schedule: 'cosine', optimizer: 'adamw', alpha: 5, seed: 0, compare: false };

/** The numeric fields' bounds, for the page's form: what a value must be, in words. */
export const NUMBER_FIELDS: Record<'steps' | 'batchSize' | 'lr' | 'alpha' | 'seed', { label: string; integer: boolean; min: number; max: number; above?: boolean }> = {
  steps: { label: 'Steps', integer: true, min: 1, max: 100_000 },
  batchSize: { label: 'Batch size', integer: true, min: 1, max: 256 },
  lr: { label: 'Learning rate', integer: false, min: 0, max: 10, above: true },
  alpha: { label: 'NEFTune alpha', integer: false, min: 0, max: 1000 },
  seed: { label: 'Seed', integer: true, min: 0, max: 2 ** 31 - 1 },
};

/** What is wrong with `text` as the field `key`, in words, or undefined. */
export function numberProblem(key: keyof typeof NUMBER_FIELDS, text: string): string | undefined {
  const f = NUMBER_FIELDS[key];
  const value = Number(text.trim());
  const kind = f.integer ? 'a whole number' : 'a number';
  const range = `${f.above ? `above ${f.min}` : `from ${f.min}`} ${f.above ? 'and at most' : 'to'} ${f.max}`;
  if (text.trim() === '' || !Number.isFinite(value) || (f.integer && !Number.isInteger(value)) || (f.above ? value <= f.min : value < f.min) || value > f.max) {
    return `${f.label} must be ${kind} ${range}; "${text.trim()}" is not.`;
  }
  return undefined;
}
