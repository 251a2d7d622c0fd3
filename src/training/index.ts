/**
 * Training steps (browser-safe): `buildTrainingStep` turns a forward graph into one graph that
 * runs forward, loss, backward and an optimizer update in standard ONNX ops, so it runs on any
 * ONNX Runtime build. The gradient machinery (rules, emitter, shape table) stays internal.
 */
export {
  buildTrainingStep, TRAINING_STEP_METADATA_KEY,
  type LossChoice, type StatePair, type TrainingStep, type TrainingStepOptions, type TrainingStepRecord,
} from './step.js';
export { MIN_TRAINING_OPSET, type GradientOptions } from './gradients.js';
export { TrainingOptionError, TrainingRunError, UnsupportedGradientError } from './errors.js';
export { Trainer, maxSequenceLength, sequenceLimit, type SequenceLimit, type StepEvent, type TrainerOptions, type TrainerOrt, type TrainerSession, type TrainerTensor } from './trainer.js';
export {
  learningRateAt, alphaAt, checkLearningRateSchedule, checkAlphaSchedule, type LearningRateSchedule, type AlphaSchedule,
} from './schedules.js';
export { IGNORE_INDEX, type TokenBatch } from './batch.js';
export {
  Batcher, TrainingDataError, TokenJsonlParser, parseTokenJsonl, readTokenJsonl, parseAlpaca, alpacaPrompt, tokenizeAlpaca, checkTokenizerFits,
  type BatcherOptions, type BatcherState, type TokenDataset, type TokenRow, type TokenJsonlOptions, type AlpacaRecord, type AlpacaTokenizeOptions,
} from './data.js';
export { loadTokenizer, type TextTokenizer, type LoadTokenizerOptions } from './tokenize.js';
export {
  CHECKPOINT_FORMAT, checkpointToModel, checkpointFromModel, CheckpointFormatError, CheckpointMismatchError,
  type CheckpointInfo, type TrainingCheckpoint,
} from './checkpoint.js';
export { exportFineTuned, type ExportResult, type ExternalWrite } from './export.js';
export { lossPlotSvg, type LossPlotOptions, type LossPoint, type LossSeries } from './plot.js';
