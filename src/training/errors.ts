import { OnnxNeftuneError, type ErrorMessage } from '../graph/errors.js';

/** Ops on a parameter-to-loss path that have no gradient rule; every one is listed, nothing was built. */
export class UnsupportedGradientError extends OnnxNeftuneError {
  constructor(message: string | ErrorMessage, readonly ops: ReadonlyArray<{ op: string; node: string; why: string }>) {
    super('BAD_OPTION', message);
  }
}

/** A training-step option that does not fit this model (unknown loss or parameter, non-scalar loss, ...). */
export class TrainingOptionError extends OnnxNeftuneError {
  constructor(message: string | ErrorMessage) { super('BAD_OPTION', message); }
}
