/**
 * The package as users get it: `npm pack`, installed into a fresh project without ONNX Runtime,
 * the CLI run from there, every export imported from Node, and the browser-safe exports bundled for
 * the browser with no `node:` import surviving.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { encodeModel } from '../src/graph/index.js';
import { buildTinyGpt } from '../examples/models.js';
import { tempDir } from './cli-helpers.js';
import { projectRoot } from './helpers.js';

const pkg = JSON.parse(readFileSync(path.join(projectRoot, 'package.json'), 'utf8'));
const BROWSER_SAFE = ['.', './graph', './passes', './verify'];

function run(command: string, args: string[], cwd: string, env: Record<string, string> = {}) {
  const r = spawnSync(command, args, { cwd, encoding: 'utf8', env: { ...process.env, NO_COLOR: '1', ...env }, timeout: 180_000 });
  return { code: r.status, stdout: r.stdout ?? '', stderr: r.stderr ?? '' };
}

/** Packs the package and installs the tarball into a fresh project (from npm's cache where it can). */
const consumer = (() => {
  const root = tempDir('package');
  const packed = run('npm', ['pack', '--json', '--pack-destination', root], projectRoot);
  assert.equal(packed.code, 0, packed.stderr);
  const [{ filename, files }] = JSON.parse(packed.stdout) as Array<{ filename: string; files: Array<{ path: string }> }>;
  const project = path.join(root, 'project');
  mkdirSync(project);
  writeFileSync(path.join(project, 'package.json'), JSON.stringify({ name: 'consumer', private: true, type: 'module' }));
  const installed = run('npm', ['install', '--prefer-offline', '--no-audit', '--no-fund', path.join(root, filename)], project);
  return { project, files: files.map((f) => f.path), installed };
})();

test('the tarball installs into a fresh project without ONNX Runtime (optional peers), small', () => {
  assert.equal(consumer.installed.code, 0, consumer.installed.stderr);
  const modules = readdirSync(path.join(consumer.project, 'node_modules'));
  assert.ok(modules.includes('onnx-neftune'));
  assert.ok(!modules.some((m) => m.startsWith('onnxruntime')), `ONNX Runtime was installed: ${modules.join(', ')}`);
  assert.deepEqual(Object.keys(pkg.peerDependenciesMeta).sort(), ['onnxruntime-node', 'onnxruntime-web']);
  assert.ok(!('onnxruntime-node' in pkg.dependencies) && !('onnxruntime-web' in pkg.dependencies));
  assert.ok(consumer.files.some((f) => f === 'dist/cli/bin.cjs'), 'the bin is packed');
  assert.ok(!consumer.files.some((f) => f.startsWith('dist/tests/') || f.startsWith('dist/bench/') || f.endsWith('.map')), 'no tests, benches or source maps');
});

test('the installed CLI patches, strips and inspects; verify names what to install', () => {
  const { project } = consumer;
  const model = path.join(project, 'model.onnx');
  const original = encodeModel(buildTinyGpt());
  writeFileSync(model, original);
  const bin = path.join(project, 'node_modules', '.bin', 'neftune');
  assert.ok(existsSync(bin), 'npm linked the bin');
  const patch = run(bin, ['patch', 'model.onnx', '-o', 'patched.onnx', '--seed', '3'], project);
  assert.equal(patch.code, 0, patch.stdout + patch.stderr);
  const strip = run(bin, ['strip', 'patched.onnx', '-o', 'restored.onnx'], project);
  assert.equal(strip.code, 0, strip.stdout + strip.stderr);
  assert.deepEqual(readFileSync(path.join(project, 'restored.onnx')), Buffer.from(original));
  const inspect = run('npx', ['--no-install', 'neftune', 'inspect', 'patched.onnx', '--json'], project);
  assert.equal(inspect.code, 0, inspect.stderr);
  assert.equal(JSON.parse(inspect.stdout).files[0].model.patched, true);
  for (const [ep, name] of [['cpu', 'onnxruntime-node'], ['wasm', 'onnxruntime-web']]) {
    const verify = run(bin, ['verify', 'patched.onnx', '--ep', ep!, '--json'], project);
    assert.equal(verify.code, 2, verify.stdout + verify.stderr);
    const error = JSON.parse(verify.stdout).files[0].error;
    assert.equal(error.code, 'EP_UNAVAILABLE');
    assert.match(error.message, new RegExp(`npm install ${name}`));
  }
});

test('every export imports from Node in the installed package', () => {
  for (const key of Object.keys(pkg.exports).filter((k) => k !== './package.json')) {
    const spec = key === '.' ? 'onnx-neftune' : `onnx-neftune/${key.slice(2)}`;
    const r = run(process.execPath, ['--input-type=module', '-e', `const m = await import(${JSON.stringify(spec)}); console.log(Object.keys(m).length);`], consumer.project);
    assert.equal(r.code, 0, `${spec}: ${r.stderr}`);
    assert.ok(Number(r.stdout) > 0, `${spec} exports nothing`);
  }
});

test('the browser-safe exports bundle for the browser with no node: import', async () => {
  const esbuild = createRequire(path.join(projectRoot, 'package.json'))('esbuild') as typeof import('esbuild');
  const entry = path.join(consumer.project, 'browser-entry.js');
  writeFileSync(entry, BROWSER_SAFE.map((k, i) => `export * as e${i} from ${JSON.stringify(k === '.' ? 'onnx-neftune' : `onnx-neftune/${k.slice(2)}`)};`).join('\n'));
  const result = await esbuild.build({ entryPoints: [entry], bundle: true, platform: 'browser', format: 'esm', write: false, absWorkingDir: consumer.project, logLevel: 'silent' });
  const code = result.outputFiles[0]!.text;
  assert.ok(code.length > 10_000, 'bundled the library');
  assert.doesNotMatch(code, /["']node:[a-z_]+["']/, 'a node: import survived in the browser bundle');
  assert.doesNotMatch(code, /onnxruntime-node/, 'onnxruntime-node is referenced by a browser-safe export');
});
