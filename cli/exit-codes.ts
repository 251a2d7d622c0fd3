/** The CLI's exit codes: stable, documented in --help and the README. */
export const EXIT = {
  OK: 0,
  /** Unexpected failure, or a batch whose files failed for different reasons. */
  INTERNAL: 1,
  /** Bad flags or options that do not fit the model (unknown table, mask input missing, opset too old). */
  USAGE: 2,
  /** No token embedding found, or the choice is ambiguous. */
  NO_EMBEDDING: 3,
  /** Unreadable or invalid model, or unsafe/inconsistent external data. */
  INVALID_MODEL: 4,
  /** Refused to protect files or models: already patched, would overwrite the input or a different data file. */
  REFUSED: 5,
  /** verify ran and a check failed. */
  VERIFY_FAILED: 6,
} as const;

const BY_ERROR_CODE: Record<string, number> = {
  BAD_OPTION: EXIT.USAGE,
  EP_UNAVAILABLE: EXIT.USAGE,
  NO_EMBEDDING: EXIT.NO_EMBEDDING,
  AMBIGUOUS_EMBEDDING: EXIT.NO_EMBEDDING,
  ONNX_DECODE: EXIT.INVALID_MODEL,
  ONNX_MODEL: EXIT.INVALID_MODEL,
  EXTERNAL_DATA: EXIT.INVALID_MODEL,
  FILE_ACCESS: EXIT.INVALID_MODEL,
  MODEL_TOO_LARGE: EXIT.INVALID_MODEL,
  ALREADY_PATCHED: EXIT.REFUSED,
  PATCH_MISMATCH: EXIT.REFUSED,
  REFUSED: EXIT.REFUSED,
  VERIFY_FAILED: EXIT.VERIFY_FAILED,
};

export const exitCodeFor = (errorCode: string | undefined): number => (errorCode && BY_ERROR_CODE[errorCode]) || EXIT.INTERNAL;

export const EXIT_CODE_HELP = `Exit codes:
  0  success (for strip, also "nothing to strip")
  1  unexpected error, or a batch whose files failed for different reasons
  2  usage error: bad flags, or options that do not fit the model
  3  no token embedding found, or the choice is ambiguous
  4  unreadable or invalid model, or unsafe external data
  5  refused: already patched, or would overwrite the input or another file
  6  verify: a check failed`;
