/** Turns the command line's model arguments into the files to process and where each one goes. */
import { existsSync, readdirSync, statSync } from 'node:fs';
import path from 'node:path';

export interface Job {
  /** Path as the user sees it, or '-' for stdin. */
  input: string;
  /** Destination path, '-' for stdout, or undefined (dry run / inspect). */
  output: string | undefined;
  /** A note for the report (e.g. why a file of an artifacts folder was chosen). */
  note?: string;
}

export class UsageError extends Error {
  readonly code = 'USAGE';
}

const TRAINING_ARTIFACT = 'training_model.onnx';

/** Every .onnx file under `dir`, sorted, or just training_model.onnx for an ORT training-artifacts folder. */
function expandDirectory(dir: string): Array<{ file: string; base: string; note?: string }> {
  if (existsSync(path.join(dir, TRAINING_ARTIFACT))) {
    const others = readdirSync(dir).filter((f) => f.endsWith('.onnx') && f !== TRAINING_ARTIFACT);
    return [{
      file: path.join(dir, TRAINING_ARTIFACT), base: dir,
      note: `ONNX Runtime training artifacts folder: only ${TRAINING_ARTIFACT} is processed${others.length ? ` (${others.join(', ')} left as they are)` : ''}`,
    }];
  }
  const found: string[] = [];
  const walk = (d: string) => {
    for (const entry of readdirSync(d, { withFileTypes: true }).sort((a, b) => a.name.localeCompare(b.name))) {
      const full = path.join(d, entry.name);
      if (entry.isDirectory()) walk(full);
      else if (entry.isFile() && entry.name.endsWith('.onnx')) found.push(full);
    }
  };
  walk(dir);
  return found.map((file) => ({ file, base: dir }));
}

export function planJobs(args: string[], options: { output?: string; inPlace?: boolean; dryRun?: boolean; needsOutput: boolean }): Job[] {
  if (!args.length) throw new UsageError('Give at least one model file or folder');
  if (options.output !== undefined && options.inPlace) throw new UsageError('Use either -o/--output or --in-place, not both');
  const expanded: Array<{ file: string; base: string | undefined; note?: string }> = [];
  for (const arg of args) {
    if (arg === '-') { expanded.push({ file: '-', base: undefined }); continue; }
    if (existsSync(arg) && statSync(arg).isDirectory()) {
      const files = expandDirectory(arg);
      if (!files.length) throw new UsageError(`Folder ${arg} contains no .onnx file`);
      expanded.push(...files);
    } else {
      expanded.push({ file: arg, base: undefined });
    }
  }
  const fromFolder = expanded.some((e) => e.base !== undefined);
  const many = expanded.length > 1 || fromFolder;
  if (expanded.filter((e) => e.file === '-').length && many) throw new UsageError("'-' (stdin) works only with a single model");

  if (!options.needsOutput || options.dryRun) return expanded.map((e) => ({ input: e.file, output: undefined, ...(e.note ? { note: e.note } : {}) }));
  if (options.inPlace) {
    if (expanded.some((e) => e.file === '-')) throw new UsageError('--in-place needs a file, not stdin');
    return expanded.map((e) => ({ input: e.file, output: e.file, ...(e.note ? { note: e.note } : {}) }));
  }
  if (options.output === undefined) {
    if (expanded.length === 1 && expanded[0]!.file === '-') return [{ input: '-', output: '-' }];
    throw new UsageError('Say where to write: -o <file|folder>, -o - for stdout, or --in-place');
  }
  const out = options.output;
  if (out === '-') {
    if (many) throw new UsageError("-o - (stdout) works only with a single model");
    return [{ input: expanded[0]!.file, output: '-' }];
  }
  const outIsDir = many || out.endsWith('/') || out.endsWith(path.sep) || (existsSync(out) && statSync(out).isDirectory());
  if (!outIsDir) return [{ input: expanded[0]!.file, output: out }];
  return expanded.map((e) => {
    const rel = e.file === '-' ? 'model.onnx' : e.base ? path.relative(e.base, e.file) : path.basename(e.file);
    return { input: e.file, output: path.join(out, rel), ...(e.note ? { note: e.note } : {}) };
  });
}
