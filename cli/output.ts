/** Human-readable output: colour only on a terminal without NO_COLOR; progress only for big files. */
import { isatty } from 'node:tty';

export const useColor = (): boolean => isatty(2) && isatty(1) && !('NO_COLOR' in process.env) && process.env['TERM'] !== 'dumb';

const paint = (code: string) => (text: string) => (useColor() ? `\x1b[${code}m${text}\x1b[0m` : text);
export const bold = paint('1');
export const dim = paint('2');
export const red = paint('31');
export const green = paint('32');
export const yellow = paint('33');

/** Progress on stderr for files over 64 MB, when stderr is a terminal. */
export function progressReporter(label: string, total: number): ((done: number) => void) | undefined {
  if (!isatty(2) || total < 64 * 2 ** 20) return undefined;
  let last = 0;
  return (done: number) => {
    const now = Date.now();
    if (now - last < 200 && done < total) return;
    last = now;
    process.stderr.write(`\r${label}: ${(done / 2 ** 20).toFixed(0)} / ${(total / 2 ** 20).toFixed(0)} MB${done >= total ? '\n' : ''}`);
  };
}

/** Fixed-width table with a header row. */
export function table(rows: string[][]): string {
  // A loop, not Math.max(...column): inspect may list 100,000s of lookups.
  const widths = rows[0]!.map((_, i) => rows.reduce((w, r) => Math.max(w, (r[i] ?? '').length), 0));
  return rows.map((r, k) => {
    const line = r.map((cell, i) => cell.padEnd(widths[i]!)).join('  ').trimEnd();
    return k === 0 ? bold(line) : line;
  }).join('\n');
}

export const megabytes = (n: number): string => (n >= 2 ** 20 ? `${(n / 2 ** 20).toFixed(1)} MB` : `${(n / 1024).toFixed(1)} kB`);
