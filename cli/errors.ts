/** The CLI's own typed errors: part of the library's OnnxNeftuneError hierarchy, so every one has a code and an exit code. */
import { OnnxNeftuneError } from '../src/graph/errors.js';
import { FileAccessError } from '../src/io/errors.js';

/** The command line is wrong or inconsistent (bad flags, colliding outputs, a folder where a file is needed). */
export class UsageError extends OnnxNeftuneError {
  /** Batch-folder entries that were not processed (when no model was left to process). */
  readonly skipped: SkippedEntry[];
  constructor(message: string, options: { skipped?: SkippedEntry[] } = {}) {
    super('USAGE', message);
    this.skipped = options.skipped ?? [];
  }
}

/** A batch-folder entry that is not processed, and why (symbolic link, FIFO, socket, ...). */
export interface SkippedEntry { path: string; reason: string }

export { OutputWriteError } from '../src/io/errors.js';

const ERRNO_WORDS: Record<string, string> = {
  ENOENT: 'no such file or folder',
  EACCES: 'permission denied',
  EPERM: 'operation not permitted',
  ELOOP: 'too many levels of symbolic links (a link loop?)',
  ENOTDIR: 'a part of the path is not a folder',
  ENAMETOOLONG: 'name too long',
  EMFILE: 'too many open files',
  ENFILE: 'too many open files',
  EIO: 'input/output error',
  ENOSPC: 'no space left on device',
  EBADF: 'bad file descriptor (closed?)',
  EPIPE: 'broken pipe',
};

/** `ENOSPC (no space left on device)`, or the error's own message for codes without words. */
export function describeErrno(error: unknown): string {
  const code = (error as NodeJS.ErrnoException)?.code;
  if (code && ERRNO_WORDS[code]) return `${code} (${ERRNO_WORDS[code]})`;
  return code ?? String((error as Error)?.message ?? error);
}

/** A Node system error (errno code such as ENOENT); with `codes`, one of those. */
export function isErrno(error: unknown, ...codes: string[]): error is NodeJS.ErrnoException {
  const code = (error as NodeJS.ErrnoException)?.code;
  return error instanceof Error && typeof code === 'string' && /^E[A-Z0-9]+$/.test(code) && (!codes.length || codes.includes(code));
}

/** A typed error for a failed fs call on `what` (e.g. "folder data/"); typed errors pass through. */
export function fsError(error: unknown, what: string): OnnxNeftuneError {
  if (error instanceof OnnxNeftuneError) return error;
  return new FileAccessError(`Cannot read ${what}: ${describeErrno(error)}`, { cause: error });
}
