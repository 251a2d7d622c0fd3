import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import path from 'node:path';
import { ModelBuilder, OnnxNeftuneError, attr, type Model } from '../src/graph/index.js';
import { applyNeftune, type NeftuneOptions } from '../src/passes/index.js';

/** The project root, whether running from tests/ (sources) or dist/tests/ (compiled). */
export const projectRoot = (() => {
  let dir = path.dirname(fileURLToPath(import.meta.url));
  while (!existsSync(path.join(dir, 'package.json'))) dir = path.dirname(dir);
  return dir;
})();

export const fixturesDir = path.resolve(projectRoot, '../shared/fixtures');
export const haveFixtures = existsSync(path.join(fixturesDir, 'MANIFEST.json'));
/** Pass as the `skip` option of a test that reads third-party fixtures. */
export const skipWithoutFixtures: string | false = haveFixtures ? false
  : `third-party fixtures not found at ${fixturesDir}; tests that read them are skipped`;

export const fixtureNames = (): string[] =>
  haveFixtures ? readdirSync(fixturesDir).filter((f) => f.endsWith('.onnx')).sort() : [];

export const readFixture = (name: string): Uint8Array => new Uint8Array(readFileSync(path.join(fixturesDir, name)));

export function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && Buffer.compare(Buffer.from(a.buffer, a.byteOffset, a.length), Buffer.from(b.buffer, b.byteOffset, b.length)) === 0;
}

/** First differing offset, for readable failures. */
export function firstDifference(a: Uint8Array, b: Uint8Array): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return i;
  return a.length === b.length ? -1 : n;
}

/** The refusals that mean "this model has nothing to patch" (no, an ambiguous or only a fused token embedding). */
export const NOTHING_TO_PATCH: ReadonlySet<string> = new Set(['NO_EMBEDDING', 'AMBIGUOUS_EMBEDDING']);

/**
 * Patches `model` when it has a patchable token table. A refusal for having nothing to patch
 * returns false; any other error (another typed error included) is a failure and is thrown.
 * Callers count the trues against a floor, so a regression that refuses everything fails.
 */
export function patchIfPossible(model: Model, options: NeftuneOptions = {}): boolean {
  try {
    applyNeftune(model, options);
    return true;
  } catch (error) {
    if (error instanceof OnnxNeftuneError && NOTHING_TO_PATCH.has(error.code)) return false;
    throw error;
  }
}

/** x -> If(cond) { then: x * 2 -> then_out ; else: x + x -> else_out } -> y; both branches capture x. */
export function ifModel(): Model {
  const b = new ModelBuilder({ opset: 17, irVersion: 8 });
  const x = b.input('x', 'float', [2]);
  const cond = b.input('cond', 'bool', []);
  const two = b.constant('two', 'float', [], [2]);
  const thenB = b.subgraph('then_branch');
  thenB.output(thenB.op('Mul', [x, two], {}, { name: 'then_mul', outputs: ['then_out'] }), 'float', [2]);
  const elseB = b.subgraph('else_branch');
  elseB.output(elseB.op('Add', [x, x], {}, { name: 'else_add', outputs: ['else_out'] }), 'float', [2]);
  const y = b.op('If', [cond], { then_branch: attr.graph(thenB), else_branch: attr.graph(elseB) }, { outputs: ['y'] });
  b.output(y, 'float', [2]);
  return b.build();
}
