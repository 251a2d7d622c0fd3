/**
 * The public API, entry by entry: the runtime names each package export provides. Growth (or a
 * removal) is a decision: update tests/api-surface.json in the same change, and say why.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, readdirSync } from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { projectRoot } from './helpers.js';

const expected = JSON.parse(readFileSync(path.join(projectRoot, 'tests', 'api-surface.json'), 'utf8')) as Record<string, string[]>;
const pkg = JSON.parse(readFileSync(path.join(projectRoot, 'package.json'), 'utf8')) as { exports: Record<string, { default: string } | string> };

test('every package export provides exactly the names in tests/api-surface.json', async () => {
  const entries = Object.entries(pkg.exports).filter(([, target]) => typeof target !== 'string');
  assert.deepEqual(entries.map(([key]) => key).sort(), Object.keys(expected).sort(), 'the list covers every export of package.json');
  for (const [key, target] of entries) {
    const module = await import(pathToFileURL(path.join(projectRoot, (target as { default: string }).default)).href);
    const names = Object.keys(module).sort();
    const added = names.filter((n) => !expected[key]!.includes(n));
    const removed = expected[key]!.filter((n) => !names.includes(n));
    assert.deepEqual({ added, removed }, { added: [], removed: [] }, `${key}: the public API changed; update tests/api-surface.json if that is intended`);
  }
});

test('no wire internals, CLI or test helpers are public', () => {
  const all = new Set(Object.values(expected).flat());
  for (const internal of ['encodeVarint', 'PLACEHOLDER_LENGTH', 'coalesce', 'joinPieces', 'fieldsAsPieces', 'encodeModelPieces', 'onnxRoot',
    'ModelProtoType', 'Emitter', 'graphsWithPaths', 'normalQuantile', 'readCompact', 'FilePayload', 'ModelSource', 'streamPieces', 'sameContent',
    'descriptorPath', 'carryExternalData', 'usageFailure', 'runCli', 'patchIfPossible',
    'planGradients', 'emitGradients', 'inferShapes', 'ShapeTable', 'parameterToInput', 'oneHotAs', 'stepCommand']) {
    assert.ok(!all.has(internal), `${internal} is exported`);
  }
});

test('the training entry is browser-safe: src/training imports nothing from Node, files or the runtime loader', () => {
  const dir = path.join(projectRoot, 'src', 'training');
  const files = readdirSync(dir).filter((f) => f.endsWith('.ts'));
  assert.ok(files.includes('index.ts') && files.includes('step.ts'));
  for (const name of files) {
    const text = readFileSync(path.join(dir, name), 'utf8');
    for (const spec of text.matchAll(/from\s+['"]([^'"]+)['"]|import\(\s*['"]([^'"]+)['"]/g)) {
      const target = spec[1] ?? spec[2]!;
      assert.ok(target.startsWith('./') || target.startsWith('../graph/') || target.startsWith('../passes/') || target === '@huggingface/tokenizers', `src/training/${name} imports ${target}`);
    }
    assert.doesNotMatch(text, /\bprocess\.|\bBuffer\b|\brequire\(/, `src/training/${name} uses a Node global`);
  }
});
