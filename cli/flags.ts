/**
 * Command-line flags made from option schemas: the yargs definitions, argv back to library
 * options, and the one table that spells an option named in an error message as its flag.
 */
import type { Options as YargsOption } from 'yargs';
import type { OnnxNeftuneError } from '../src/graph/errors.js';
import { NEFTUNE_OPTIONS, defaultText, flagNames, type OptionSchema, type OptionSpec } from '../src/passes/index.js';
// A cycle (step.ts imports commands.ts, which imports this): safe, STEP_OPTIONS is a literal evaluated first.
import { STEP_OPTIONS } from './step.js';

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
export const FLAG_OF: ReadonlyMap<string, string> = new Map([...flagNames(NEFTUNE_OPTIONS), ...flagNames(FILE_OPTIONS), ...flagNames(STEP_OPTIONS)]);

/** An error's message as the CLI prints it: options named as their flags (`tables` -> `--table`). */
export function cliMessage(error: OnnxNeftuneError): string {
  return error.describe((option) => FLAG_OF.get(option) ?? option);
}
