/**
 * The Train tab's run, host-agnostic: the bundled tiny causal LM (the builder's GPT), token data,
 * and the Trainer loop with a stop check between updates. The page's worker runs it on
 * onnxruntime-web; the tests run the same function in Node to compare.
 */
import type { Model } from '../src/graph/index.js';
import { applyNeftune } from '../src/passes/index.js';
import { Batcher, parseTokenJsonl, type TokenDataset } from '../src/training/data.js';
import { buildTrainingStep } from '../src/training/step.js';
import { Trainer, type StepEvent, type TrainerOrt } from '../src/training/trainer.js';
import type { Tensor } from '../src/graph/tensor.js';
import { buildTinyGpt } from '../examples/models.js';
import { TINY_MODEL, type TrainSettings } from './train-settings.js';

export { BUNDLED_DATA, DEFAULT_SETTINGS, type TrainSettings } from './train-settings.js';

/** The forward model, patched with an alpha input when NEFTune is on (the schedule feeds alpha). */
export function tinyForward(neftune: boolean): Model {
  const model = buildTinyGpt({ vocab: TINY_MODEL.vocab, maxPositions: TINY_MODEL.maxPositions });
  if (neftune) applyNeftune(model, { alphaInput: true });
  return model;
}

export function parseTrainingData(bytes: Uint8Array | string, source: string): TokenDataset {
  return parseTokenJsonl(bytes, { vocabSize: TINY_MODEL.vocab, source });
}

export interface RunOptions {
  ort: TrainerOrt;
  settings: TrainSettings;
  dataset: TokenDataset;
  sessionOptions?: Record<string, unknown>;
  keepOnDevice?: 'gpu-buffer';
  onStep?: (event: StepEvent) => void;
  /** Asked before each update; true ends the run there. */
  shouldStop?: () => boolean | Promise<boolean>;
}

export interface RunResult { forward: Model; params: Tensor[]; events: StepEvent[]; stopped: boolean }

export async function runTraining(options: RunOptions): Promise<RunResult> {
  const { settings } = options;
  const forward = tinyForward(settings.alpha !== null);
  const step = buildTrainingStep(forward, { optimizer: settings.optimizer, loss: 'causal-lm:labels' });
  const trainer = await Trainer.create({
    ort: options.ort, step, initial: forward, seed: settings.seed,
    schedule: settings.schedule === 'constant' ? { kind: 'constant', lr: settings.lr } : { kind: settings.schedule, lr: settings.lr, totalSteps: settings.steps },
    ...(settings.alpha !== null ? { alpha: { kind: 'constant', alpha: settings.alpha } } : {}),
    ...(options.sessionOptions ? { sessionOptions: options.sessionOptions } : {}),
    ...(options.keepOnDevice ? { keepOnDevice: options.keepOnDevice } : {}),
  });
  const batcher = new Batcher(options.dataset.rows, { batchSize: settings.batchSize, maxLength: TINY_MODEL.maxPositions, seed: settings.seed });
  const events: StepEvent[] = [];
  let stopped = false;
  try {
    for (let k = 0; k < settings.steps; k++) {
      if (await options.shouldStop?.()) { stopped = true; break; }
      const event = await trainer.trainStep(batcher.next().batch);
      events.push(event);
      options.onStep?.(event);
    }
    return { forward, params: await trainer.parameters(), events, stopped };
  } finally {
    await trainer.release();
  }
}

/** The runs' NEFTune alphas: the settings' own, and no NEFTune beside it when comparing. */
export function runAlphas(settings: TrainSettings): Array<number | null> {
  return settings.compare && settings.alpha !== null ? [settings.alpha, null] : [settings.alpha];
}

export const runName = (alpha: number | null): string => (alpha === null ? 'no NEFTune' : `NEFTune alpha ${alpha}`);

/** The runs' losses as CSV, one row per update. */
export function lossCsv(runs: ReadonlyArray<{ name: string; events: readonly StepEvent[] }>): string {
  const rows = runs.flatMap((r) => r.events.map((e) => [r.name, e.step, e.loss, e.lr, e.alpha, e.tokens, e.seconds.toFixed(6)].join(',')));
  return `run,step,loss,lr,alpha,tokens,seconds\n${rows.map((r) => `${r}\n`).join('')}`;
}
