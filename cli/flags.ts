/**
 * Command-line flags made from option schemas: the yargs definitions, argv back to library
 * options, and the one table that spells an option named in an error message as its flag.
 */
import type { Options as YargsOption } from 'yargs';
import type { OnnxNeftuneError } from '../src/graph/errors.js';
import { UsageError } from './errors.js';
import { NEFTUNE_OPTIONS, defaultText, flagNames, type OptionSchema, type OptionSpec } from '../src/passes/index.js';
import { STEP_OPTIONS } from './step-options.js';

/** The file options of patch and strip (the library's saveModelFile knows `inPlace` too). */
export interface FileFlags { output?: string; inPlace?: boolean; dryRun?: boolean; json?: boolean }

export const FILE_OPTIONS: OptionSchema<FileFlags> = {
  output: { type: 'string', flag: 'output', placeholder: '<file|dir|->', description: 'Output file, or folder for several models; - for stdout' },
  inPlace: { type: 'boolean', flag: 'in-place', description: 'Overwrite the input file(s)' },
  dryRun: { type: 'boolean', flag: 'dry-run', description: 'Report what would change; write nothing' },
  json: { type: 'boolean', flag: 'json', description: 'Print one JSON object (shape in the README)' },
};

/** Short aliases of flags. */
const ALIASES: Record<string, string> = { output: 'o' };

/**
 * yargs definitions for a schema, keyed by flag. No yargs defaults: an option not given stays
 * absent, so the library fills in its defaults exactly as for a library caller (same bytes).
 */
export function yargsOptions<Options>(schema: OptionSchema<Options>): Record<string, YargsOption> {
  const out: Record<string, YargsOption> = {};
  for (const spec of Object.values(schema) as OptionSpec[]) {
    const shown = spec.type === 'boolean' ? '' : defaultText(spec);
    const describe = `${spec.description}${shown ? ` [default: ${shown}]` : ''}`;
    const alias = ALIASES[spec.flag];
    const base: YargsOption = { describe, ...(alias ? { alias } : {}) };
    switch (spec.type) {
      case 'number': out[spec.flag] = { ...base, type: 'number' }; break;
      case 'string': case 'boolean-or-string': out[spec.flag] = { ...base, type: 'string' }; break;
      case 'boolean': out[spec.flag] = { ...base, type: 'boolean' }; break;
      case 'strings': out[spec.flag] = { ...base, type: 'string', array: true }; break;
      case 'choice': out[spec.flag] = { ...base, choices: [...spec.choices] }; break;
    }
  }
  return out;
}

/** The library options the parsed flags ask for: only what was given. */
export function optionsFromArgv<Options>(schema: OptionSchema<Options>, argv: Record<string, unknown>): Options {
  const options: Record<string, unknown> = {};
  for (const [key, spec] of Object.entries(schema) as Array<[string, OptionSpec]>) {
    const value = argv[spec.flag];
    if (value === undefined) continue;
    // `--alpha-input` without a name means the default name.
    options[key] = spec.type === 'boolean-or-string' && value === '' ? true : value;
  }
  return options as Options;
}

/** Option name -> flag, for every option the CLI has. */
export const FLAG_OF: ReadonlyMap<string, string> = new Map([
  ...flagNames(NEFTUNE_OPTIONS), ...flagNames(FILE_OPTIONS), ...flagNames(STEP_OPTIONS),
  // Trainer options that `neftune train` spells as its own flags (cli/train-options.ts).
  ['maxLength', '--max-len'],
]);

/** An error's message as the CLI prints it: options named as their flags (`tables` -> `--table`). */
export function cliMessage(error: OnnxNeftuneError): string {
  return error.describe((option) => FLAG_OF.get(option) ?? option);
}

const kebab = (key: string): string => key.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`);

/**
 * A flag that takes one value, given more than once, is refused for every command before it runs:
 * yargs would make it an array (a path array crashes a command), or, for a number whose second
 * value is 1, add them up (`--max-len 32 --max-len 1` is 33). Counted in the raw arguments, as
 * yargs' own parse hides the repeat; `declared` are yargs' options (array and boolean flags, aliases).
 */
export function refuseRepeatedFlags(args: readonly string[], declared: { array: string[]; boolean: string[]; alias: Record<string, string[]> }): void {
  const groups = new Map<string, string[]>();
  for (const [key, aliases] of Object.entries(declared.alias)) for (const name of [key, ...aliases]) groups.set(kebab(name), [key, ...aliases].map(kebab));
  const nameOf = (flag: string) => (groups.get(flag) ?? [flag]).filter((n) => n.length > 1).sort((a, b) => b.length - a.length)[0] ?? flag;
  const multi = new Set([...declared.array, ...declared.boolean].map((n) => nameOf(kebab(n))));
  const seen = new Map<string, string[]>();
  for (let i = 0; i < args.length; i++) {
    const arg = args[i]!;
    if (arg === '--') break;
    const m = /^--?([A-Za-z][\w-]*)(=(.*))?$/.exec(arg);
    if (!m) continue;
    const flag = nameOf(kebab(m[1]!));
    if (multi.has(flag) || multi.has(flag.replace(/^no-/, ''))) continue;
    const value = m[3] ?? args[i + 1] ?? '';
    seen.set(flag, [...(seen.get(flag) ?? []), value]);
  }
  for (const [flag, values] of seen) {
    if (values.length > 1) throw new UsageError(`--${flag} takes one value and was given ${values.length} times (${values.join(', ')}); give it once.`);
  }
}
