import { OnnxNeftuneError, type ErrorMessage } from '../graph/errors.js';

/** No patchable token embedding was found (or the only ones are fused). */
export class NoEmbeddingError extends OnnxNeftuneError {
  constructor(message: string | ErrorMessage) { super('NO_EMBEDDING', message); }
}

/** Several tables could be the token embedding; the message lists them and how to choose. */
export class AmbiguousEmbeddingError extends OnnxNeftuneError {
  constructor(message: string | ErrorMessage, readonly candidates: readonly string[]) { super('AMBIGUOUS_EMBEDDING', message); }
}

/** The model already carries a NEFTune patch (and re-patching was not asked for). */
export class AlreadyPatchedError extends OnnxNeftuneError {
  constructor(message: string | ErrorMessage) { super('ALREADY_PATCHED', message); }
}

/** An option is out of range or does not fit this model (unknown table name, opset too old, ...). */
export class PatchOptionError extends OnnxNeftuneError {
  constructor(message: string | ErrorMessage) { super('BAD_OPTION', message); }
}

/**
 * A NEFTune patch whose graph and metadata record disagree (or conflicting records): strip
 * refuses, and nothing in the model was changed.
 */
export class PatchMismatchError extends OnnxNeftuneError {
  constructor(message: string) { super('PATCH_MISMATCH', message); }
}
