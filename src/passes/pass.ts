/**
 * The contract every graph pass of this library follows (after onnx-ir's PassBase): options
 * declared once as a schema, preconditions stated apart from the rewrite, a result that says
 * whether the model changed, and an optional inverse.
 */
import type { OnnxNeftuneError } from '../graph/errors.js';
import type { Model } from '../graph/ir.js';
import { normalizeWithSchema, type OptionSchema } from './schema.js';

export interface PassResult {
  /** The model the pass was given: passes change it in place. */
  model: Model;
  modified: boolean;
}

/**
 * A graph transformation.
 *
 * - `options` declares every option once (type, default, description, check, CLI flag); the
 *   command line's flags, --help and the README's table are made from it.
 * - `normalize` checks what a caller passed and fills in defaults (throws a typed error naming the option).
 * - `check` states the preconditions that need no analysis of the graph: it returns the problems,
 *   as the typed errors the pass would throw, and never changes the model.
 * - `apply` changes the model in place and is all or nothing: when it throws (a problem only the
 *   analysis finds), the model is as it was. It expects normalized options and a model `check`
 *   found no problem with: `runPass` does both.
 * - `inverse`, when the pass can be undone (NEFTune's strip): `modified: false` when there was nothing to undo.
 */
export interface GraphPass<Options extends object, Normalized, Result extends PassResult, InverseResult extends PassResult = PassResult> {
  readonly name: string;
  readonly description: string;
  readonly options: OptionSchema<Options>;
  normalize(options: Options): Normalized;
  check(model: Model, options: Normalized): OnnxNeftuneError[];
  apply(model: Model, options: Normalized): Result;
  inverse?(model: Model): InverseResult;
}

/** A pass's `normalize` when the schema says everything: checked, defaulted, canonical. */
export function schemaNormalizer<Options extends object>(schema: OptionSchema<Options>): (options: Options) => Partial<Options> {
  return (options) => normalizeWithSchema(schema, options);
}

/** Runs a pass as the library and the CLI do: normalize the options, refuse on the first problem `check` finds, apply. */
export function runPass<Options extends object, Normalized, Result extends PassResult>(
  pass: GraphPass<Options, Normalized, Result, PassResult>, model: Model, options: Options,
): Result {
  const normalized = pass.normalize(options);
  const [problem] = pass.check(model, normalized);
  if (problem) throw problem;
  return pass.apply(model, normalized);
}
