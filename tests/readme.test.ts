/** The README's examples run as written (CLI lines and library snippets). */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { encodeModel } from '../src/graph/index.js';
import { buildTinyBert, buildTinyTrainingGraph } from '../examples/models.js';
import { cliPath, tempDir } from './cli-helpers.js';
import { projectRoot } from './helpers.js';

const readme = readFileSync(path.join(projectRoot, 'README.md'), 'utf8');
const blocks = (lang: string) => [...readme.matchAll(new RegExp('```' + lang + '\\n([\\s\\S]*?)```', 'g'))].map((m) => m[1]!);

function workspace(): string {
  const dir = tempDir('readme');
  writeFileSync(path.join(dir, 'model.onnx'), encodeModel(buildTinyTrainingGraph()));
  writeFileSync(path.join(dir, 'bert.onnx'), encodeModel(buildTinyBert()));
  mkdirSync(path.join(dir, 'artifacts'));
  writeFileSync(path.join(dir, 'artifacts', 'training_model.onnx'), encodeModel(buildTinyTrainingGraph()));
  writeFileSync(path.join(dir, 'artifacts', 'eval_model.onnx'), encodeModel(buildTinyTrainingGraph()));
  return dir;
}

test('README starts with the two quick-start commands', () => {
  const first = blocks('sh')[0]!.trim().split('\n');
  assert.deepEqual(first, ['npm ci && npm run example', 'npm test']);
  const pkg = JSON.parse(readFileSync(path.join(projectRoot, 'package.json'), 'utf8'));
  assert.ok(pkg.scripts.example && pkg.scripts.test);
});

test('README CLI examples run as written', () => {
  const dir = workspace();
  const lines = blocks('sh').flatMap((b) => b.split('\n')).filter((l) => l.startsWith('npx neftune '));
  assert.ok(lines.length >= 6);
  for (const line of lines) {
    const args = line.slice('npx neftune '.length).split(/\s+/);
    const r = spawnSync(process.execPath, [cliPath, ...args], { cwd: dir, env: { ...process.env, NO_COLOR: '1' } });
    assert.equal(r.status, 0, `${line}\n${r.stdout}\n${r.stderr}`);
  }
});

test('README library examples run as written', () => {
  const dir = workspace();
  // Package specifiers resolve through the package's own exports map, as they would for a user.
  const exportsMap = JSON.parse(readFileSync(path.join(projectRoot, 'package.json'), 'utf8')).exports as Record<string, { default: string } | string>;
  const resolveSpecifier = (spec: string): string => {
    const entry = exportsMap[spec === 'onnx-neftune' ? '.' : `.${spec.slice('onnx-neftune'.length)}`];
    assert.ok(entry && typeof entry !== 'string', `README imports ${spec}, which the package does not export`);
    return pathToFileURL(path.join(projectRoot, entry.default)).href;
  };
  const snippets = blocks('ts');
  assert.ok(snippets.length >= 3);
  snippets.forEach((code, i) => {
    const file = path.join(dir, `snippet${i}.mjs`);
    writeFileSync(file, code.replace(/from '(onnx-neftune(?:\/[a-z]+)?)'/g, (_, spec: string) => `from '${resolveSpecifier(spec)}'`));
    const r = spawnSync(process.execPath, [file], { cwd: dir });
    assert.equal(r.status, 0, `snippet ${i}:\n${code}\n${r.stderr}`);
    assert.doesNotMatch(r.stdout.toString(), /\bfalse\b/, `snippet ${i} printed false`);
  });
});
