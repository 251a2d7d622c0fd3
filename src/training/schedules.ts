/**
 * Learning-rate and NEFTune-alpha schedules: pure functions of the 0-based update index, so a
 * resumed run needs only the index (and the schedule, which the checkpoint records) to continue.
 */
import { TrainingOptionError } from './errors.js';

export interface LearningRateSchedule {
  kind: 'constant' | 'linear' | 'cosine';
  /** Peak learning rate. */
  lr: number;
  /** Updates of linear warm-up from 0 (default 0). */
  warmupSteps?: number;
  /** linear / cosine: the update count the decay reaches 0 at (required for them). */
  totalSteps?: number;
}

export interface AlphaSchedule {
  /**
   * constant: alpha throughout. linear: update i (0-based) runs at alpha + (end - alpha) * min(1, i / totalSteps)
   * (end defaults to 0): update 0 at alpha, `end` reached at update index totalSteps, just after the
   * last of totalSteps updates, which runs at end + (alpha - end) / totalSteps (10 updates from 5: 5, 4.5, ..., 0.5),
   * as Hugging Face's linear learning-rate decay does.
   */
  kind: 'constant' | 'linear';
  alpha: number;
  end?: number;
  totalSteps?: number;
  /** From this update index on, alpha is 0 (NEFTune off). */
  offAfter?: number;
}

/**
 * The learning rate of update `step` (0-based), as Hugging Face transformers' schedulers give it
 * (get_constant_schedule_with_warmup, get_linear_schedule_with_warmup, get_cosine_schedule_with_warmup
 * with half a cycle): warm-up lr * step / warmup, so update 0 of a warm-up runs at lr 0, as there.
 */
export function learningRateAt(s: LearningRateSchedule, step: number): number {
  const warmup = s.warmupSteps ?? 0;
  if (step < warmup) return (s.lr * step) / Math.max(1, warmup);
  if (s.kind === 'constant') return s.lr;
  const total = s.totalSteps!;
  const progress = (step - warmup) / Math.max(1, total - warmup);
  if (s.kind === 'linear') return s.lr * Math.max(0, (total - step) / Math.max(1, total - warmup));
  return s.lr * Math.max(0, 0.5 * (1 + Math.cos(Math.PI * Math.min(1, progress))));
}

export function alphaAt(s: AlphaSchedule, step: number): number {
  if (s.offAfter !== undefined && step >= s.offAfter) return 0;
  if (s.kind === 'constant') return s.alpha;
  const end = s.end ?? 0;
  const t = Math.min(1, step / Math.max(1, s.totalSteps!));
  return s.alpha + (end - s.alpha) * t;
}

const finite = (what: string, x: unknown, min = 0): void => {
  if (typeof x !== 'number' || !Number.isFinite(x) || x < min) throw new TrainingOptionError(`${what} must be a finite number >= ${min}, got ${String(x)}.`);
};

export function checkLearningRateSchedule(s: LearningRateSchedule): LearningRateSchedule {
  if (!['constant', 'linear', 'cosine'].includes(s.kind)) throw new TrainingOptionError(`Unknown learning-rate schedule "${String(s.kind)}"; use constant, linear or cosine.`);
  finite('The learning rate', s.lr);
  if (s.warmupSteps !== undefined) finite('warmupSteps', s.warmupSteps);
  if (s.kind !== 'constant') {
    if (s.totalSteps === undefined) throw new TrainingOptionError(`The ${s.kind} learning-rate schedule needs totalSteps (the update count its decay ends at).`);
    finite('totalSteps', s.totalSteps, 1);
  }
  return s;
}

export function checkAlphaSchedule(s: AlphaSchedule): AlphaSchedule {
  if (s.kind !== 'constant' && s.kind !== 'linear') throw new TrainingOptionError(`Unknown alpha schedule "${String(s.kind)}"; use constant or linear.`);
  finite('alpha', s.alpha);
  if (s.end !== undefined) finite('The final alpha (end)', s.end);
  if (s.offAfter !== undefined) finite('offAfter', s.offAfter);
  if (s.kind === 'linear') {
    if (s.totalSteps === undefined) throw new TrainingOptionError('The linear alpha schedule needs totalSteps (the update count alpha reaches its end value at).');
    finite('totalSteps', s.totalSteps, 1);
  }
  return s;
}
