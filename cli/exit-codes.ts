import type { ErrorCode } from '../src/graph/errors.js';

export type { ErrorCode };

/** The CLI's exit codes: stable, documented in --help and the README. */
export const EXIT = {
  OK: 0,
  /** Unexpected failure (a bug), or a batch whose files failed for different reasons. */
  INTERNAL: 1,
  /** Bad flags or options that do not fit the model (unknown table, mask input missing, opset too old), colliding outputs. */
  USAGE: 2,
  /** No token embedding found, or the choice is ambiguous. */
  NO_EMBEDDING: 3,
  /** Unreadable or invalid model, or unsafe/inconsistent external data. */
  INVALID_MODEL: 4,
  /** Refused to protect files or models: already patched, would overwrite the input or a different data file. */
  REFUSED: 5,
  /** verify ran and a check failed. */
  VERIFY_FAILED: 6,
  /** The output could not be written: disk full, I/O error, stdout closed or failing. */
  WRITE_FAILED: 7,
  /** verify could not be carried out (an input it cannot make up, a patched value missing): nothing was checked. */
  VERIFY_UNABLE: 8,
  /** train: the loss or the parameters became NaN or infinite; no model was written. */
  TRAINING_DIVERGED: 9,
} as const;

export type ExitCode = typeof EXIT[keyof typeof EXIT];

/**
 * The exit code of every error code (the union lives with the error base class in
 * src/graph/errors.ts). A code missing here is a compile error; tests/adversarial/cli.test.ts
 * checks the union against the codes the sources throw.
 */
const BY_ERROR_CODE: Record<ErrorCode, ExitCode> = {
  USAGE: EXIT.USAGE,
  BAD_OPTION: EXIT.USAGE,
  EP_UNAVAILABLE: EXIT.USAGE,
  NO_EMBEDDING: EXIT.NO_EMBEDDING,
  AMBIGUOUS_EMBEDDING: EXIT.NO_EMBEDDING,
  ONNX_DECODE: EXIT.INVALID_MODEL,
  ONNX_MODEL: EXIT.INVALID_MODEL,
  // A graph the IR cannot edit as it is (a cycle, a value with two producers) is an invalid model.
  GRAPH_EDIT: EXIT.INVALID_MODEL,
  EXTERNAL_DATA: EXIT.INVALID_MODEL,
  FILE_ACCESS: EXIT.INVALID_MODEL,
  MODEL_TOO_LARGE: EXIT.INVALID_MODEL,
  ALREADY_PATCHED: EXIT.REFUSED,
  PATCH_MISMATCH: EXIT.REFUSED,
  REFUSED: EXIT.REFUSED,
  VERIFY_FAILED: EXIT.VERIFY_FAILED,
  VERIFY_UNABLE: EXIT.VERIFY_UNABLE,
  WRITE_FAILED: EXIT.WRITE_FAILED,
  TRAINING_DIVERGED: EXIT.TRAINING_DIVERGED,
};

export const ERROR_CODES = Object.keys(BY_ERROR_CODE) as ErrorCode[];

export const isErrorCode = (code: string): code is ErrorCode => Object.hasOwn(BY_ERROR_CODE, code);

export const exitCodeFor = (code: ErrorCode): ExitCode => BY_ERROR_CODE[code];

export const EXIT_CODE_HELP = `Exit codes:
  0  success (for strip, also "nothing to strip")
  1  unexpected error, or a batch whose files failed for different reasons
  2  usage error: bad flags, options that do not fit the model, or outputs that collide
  3  no token embedding found, or the choice is ambiguous
  4  unreadable or invalid model, or unsafe external data
  5  refused: already patched, or would overwrite the input or another file
  6  verify: a check failed
  7  could not write the output (disk full, I/O error, stdout closed)
  8  verify: could not be carried out (e.g. an input it cannot make up); nothing was checked
  9  train: the loss or the parameters became NaN or infinite (diverged); no model was written`;
