import { OnnxNeftuneError, type ErrorMessage } from '../graph/errors.js';

/** An external-data reference that is unsafe or inconsistent (path traversal, links, bounds, keys). */
export class ExternalDataError extends OnnxNeftuneError {
  constructor(message: string) { super('EXTERNAL_DATA', message); }
}

/** A file operation was refused to protect the user's files (overwriting the input, a different data file). */
export class RefusedError extends OnnxNeftuneError {
  constructor(message: string | ErrorMessage) { super('REFUSED', message); }
}

/** A file could not be read or written. */
export class FileAccessError extends OnnxNeftuneError {
  constructor(message: string, options?: { cause?: unknown }) { super('FILE_ACCESS', message, options); }
}

/** The model cannot be saved as one protobuf file (over 2 GiB). */
export class ModelTooLargeError extends OnnxNeftuneError {
  constructor(message: string) { super('MODEL_TOO_LARGE', message); }
}

/** The model file changed or was replaced after it was loaded; writing would mix two files. */
export class InputChangedError extends RefusedError {}

/** An output could not be written (disk full, read-only, a folder that cannot be made, stdout closed). */
export class OutputWriteError extends OnnxNeftuneError {
  constructor(message: string, options?: { cause?: unknown }) { super('WRITE_FAILED', message, options); }
}
