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
export { TrainingOptionError, UnsupportedGradientError } from './errors.js';
