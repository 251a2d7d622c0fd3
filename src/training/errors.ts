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

/**
 * ONNX Runtime failed while running an update (an index past a table, out of memory, ...). Code
 * BAD_OPTION: at run time the usual cause is data that does not fit the model (rows longer than
 * its position table, token ids past its vocabulary); there is no runtime-failure code.
 */
export class TrainingRunError extends OnnxNeftuneError {
  constructor(message: string | ErrorMessage, readonly update: number, readonly batchShape: readonly number[], readonly runtimeMessage: string, cause: unknown) {
    super('BAD_OPTION', message, { cause });
  }
}
