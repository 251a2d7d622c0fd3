/**
 * Option schemas: each pass declares its options once (type, default, description, check, CLI
 * flag), and that one declaration drives the library's validation, the command line's flags and
 * --help, and the README's options table.
 */
import { ErrorMessage, errorMessage, optionName } from '../graph/errors.js';
import { PatchOptionError } from './errors.js';

interface SpecBase {
  /** The command-line flag, kebab-case, without dashes. */
  flag: string;
  /** One line, for --help and the README. */
  description: string;
  /** The value's placeholder in the command-line synopsis (`N`, `NAME`). */
  placeholder?: string;
  /** The default as documented, when it depends on the model (`attention_mask`). */
  defaultText?: string;
  /** false: an option about how to run (e.g. re-patch), not about what the result is; not recorded. */
  recorded?: false;
}

/** Why `value` is wrong (a phrase after "must"), or undefined when it is fine. */
type Check<T> = (value: T) => string | undefined;

export type OptionSpec =
  | SpecBase & { type: 'number'; default?: number; check?: Check<number> }
  | SpecBase & { type: 'string'; default?: string; check?: Check<string> }
  /** A switch; off is its default and is never written out. */
  | SpecBase & { type: 'boolean' }
  /** Repeatable on the command line; an empty list counts as absent. */
  | SpecBase & { type: 'strings' }
  | SpecBase & { type: 'choice'; choices: readonly string[]; default?: string }
  /** true (a default name) or a name: a flag whose value may be omitted. */
  | SpecBase & { type: 'boolean-or-string'; defaultName: string };

export type OptionSchema<Options> = { readonly [K in keyof Required<Options>]: OptionSpec };

const TYPE_TEXT: Record<OptionSpec['type'], string> = {
  number: 'number', string: 'string', boolean: 'boolean', strings: 'string[]', choice: 'choice', 'boolean-or-string': 'boolean \\| string',
};

function wrongType(spec: OptionSpec, value: unknown): string | undefined {
  switch (spec.type) {
    case 'number': return typeof value === 'number' ? undefined : 'be a number';
    case 'string': return typeof value === 'string' ? undefined : 'be a string';
    case 'boolean': return typeof value === 'boolean' ? undefined : 'be true or false';
    case 'strings': return Array.isArray(value) && value.every((v) => typeof v === 'string') ? undefined : 'be an array of names';
    case 'choice': return spec.choices.includes(value as string) ? undefined : `be ${spec.choices.slice(0, -1).join(', ')} or ${spec.choices.at(-1)}`;
    case 'boolean-or-string':
      if (typeof value === 'boolean') return undefined;
      if (typeof value !== 'string') return `be true or a name (true means ${spec.defaultName})`;
      return value === '' ? `not be an empty name (true means ${spec.defaultName})` : undefined;
  }
}

/** Why `value` is not a valid value of `spec` (a phrase after "must"), or undefined. */
export function optionProblem(spec: OptionSpec, value: unknown): string | undefined {
  return wrongType(spec, value) ?? ('check' in spec && spec.check ? (spec.check as Check<unknown>)(value) : undefined);
}

const shown = (value: unknown): string => (typeof value === 'string' ? `"${value}"` : Array.isArray(value) ? JSON.stringify(value) : String(value));

/**
 * The options checked against `schema` and put in one canonical form, in the schema's order:
 * defaults filled in, absent values, switches that are off and empty lists left out. Two ways of
 * asking for the same thing give the same object (and so the same bytes when it is recorded).
 * Throws PatchOptionError naming the option; unknown keys are refused.
 */
export function normalizeWithSchema<Options extends object>(schema: OptionSchema<Options>, options: Options): Partial<Options> {
  const given = options as Record<string, unknown>;
  const unknown = Object.keys(given).find((k) => !Object.hasOwn(schema, k) && given[k] !== undefined);
  if (unknown !== undefined) {
    throw new PatchOptionError(errorMessage`Unknown option "${unknown}"; the options are ${list(Object.keys(schema))}`);
  }
  const out: Record<string, unknown> = {};
  for (const [key, spec] of Object.entries(schema) as Array<[string, OptionSpec]>) {
    let value = given[key];
    if (value === undefined) {
      if ('default' in spec && spec.default !== undefined) out[key] = spec.default;
      continue;
    }
    const problem = optionProblem(spec, value);
    if (problem !== undefined) throw new PatchOptionError(errorMessage`${optionName(key)} must ${problem}, got ${shown(value)}`);
    if (value === false || (Array.isArray(value) && value.length === 0)) continue;
    if (Array.isArray(value)) value = [...value];
    out[key] = value;
  }
  return out as Partial<Options>;
}

const list = (names: string[]): ErrorMessage => {
  const parts = names.map((n) => errorMessage`${optionName(n)}`);
  return parts.reduce((acc, p, i) => (i === 0 ? p : i === parts.length - 1 ? errorMessage`${acc} and ${p}` : errorMessage`${acc}, ${p}`), errorMessage``);
};

/** The command-line flag of each option, with its dashes: the CLI's one translation table. */
export function flagNames<Options>(schema: OptionSchema<Options>): Map<string, string> {
  return new Map(Object.entries(schema).map(([key, spec]) => [key, `--${(spec as OptionSpec).flag}`]));
}

/** The documented default of an option, or '' when it has none. */
export function defaultText(spec: OptionSpec): string {
  if (spec.defaultText !== undefined) return spec.defaultText;
  if (spec.type === 'boolean') return 'false';
  if (spec.type === 'boolean-or-string') return `false (true: ${spec.defaultName})`;
  return 'default' in spec && spec.default !== undefined ? String(spec.default) : '';
}

/** The options as a Markdown table (README). */
export function optionsTable<Options>(schema: OptionSchema<Options>): string {
  const rows = [
    '| option | flag | type | default | description |',
    '|---|---|---|---|---|',
  ];
  for (const [key, spec] of Object.entries(schema) as Array<[string, OptionSpec]>) {
    const type = spec.type === 'choice' ? spec.choices.map((c) => `\`${c}\``).join(' \\| ') : `\`${TYPE_TEXT[spec.type]}\``;
    const flag = `\`--${spec.flag}${spec.placeholder ? ` ${spec.placeholder}` : ''}\``;
    const def = defaultText(spec);
    rows.push(`| \`${key}\` | ${flag} | ${type} | ${def ? `\`${def}\`` : ''} | ${spec.description} |`);
  }
  return rows.join('\n');
}
