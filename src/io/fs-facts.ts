/** Small file-system facts the I/O edge and the CLI both ask (Node only). */
import { lstatSync, type Stats } from 'node:fs';

/** The errno code of a failed system call (ENOENT, ...), or the error's message. */
export const errnoOf = (error: unknown): string => (error as NodeJS.ErrnoException).code ?? (error as Error).message;

/** lstat, or undefined when the path cannot be looked at (missing, unreadable folder). */
export function lstatOrUndefined(file: string): Stats | undefined {
  try { return lstatSync(file); } catch { return undefined; }
}
