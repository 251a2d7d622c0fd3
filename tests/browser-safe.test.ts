import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, readdirSync } from 'node:fs';
import path from 'node:path';
import { projectRoot } from './helpers.js';

const ALLOWED_PACKAGES = new Set(['protobufjs/light.js']);
const graphDir = path.join(projectRoot, 'src', 'graph');

/** Every module reachable from `entry`, with the bare specifiers each imports. */
function importGraph(entry = path.join(graphDir, 'index.ts'), options: { dynamic?: boolean } = {}): Map<string, string[]> {
  const seen = new Map<string, string[]>();
  const visit = (file: string) => {
    if (seen.has(file)) return;
    const text = readFileSync(file, 'utf8');
    // Type-only imports are erased by the compiler; dynamic imports are followed unless asked not to.
    const specs = [...text.matchAll(/(?:^|\n)\s*(?:import|export)\s+(?!type\s)[^'"]*?from\s+['"]([^'"]+)['"]|import\(\s*['"]([^'"]+)['"]\s*\)/g)]
      .filter((m) => m[1] !== undefined || options.dynamic !== false)
      .map((m) => m[1] ?? m[2]!)
      .filter((spec, i, all) => all.indexOf(spec) === i);
    const bare: string[] = [];
    seen.set(file, bare);
    for (const spec of specs) {
      if (spec.startsWith('.')) visit(path.resolve(path.dirname(file), spec.replace(/\.js$/, '.ts')));
      else bare.push(spec);
    }
  };
  visit(entry);
  return seen;
}

test('src/graph imports no node: module, no runtime, nothing outside the browser-safe set', () => {
  const graph = importGraph();
  assert.ok(graph.size >= 8, 'walked the module graph');
  for (const [file, bare] of graph) {
    assert.ok(file.startsWith(graphDir), `${file} is outside src/graph`);
    for (const spec of bare) assert.ok(ALLOWED_PACKAGES.has(spec), `${path.relative(projectRoot, file)} imports ${spec}`);
  }
});

test('src/graph sources use no Node globals', () => {
  for (const name of readdirSync(graphDir).filter((f) => f.endsWith('.ts'))) {
    const text = readFileSync(path.join(graphDir, name), 'utf8');
    for (const global of [/\bprocess\./, /\bBuffer\b/, /\brequire\(/, /\b__dirname\b/]) {
      assert.doesNotMatch(text, global, `${name} uses ${global}`);
    }
  }
});

test('the passes and verification (with the runtime passed in) are browser-safe too', () => {
  for (const entry of ['src/passes/index.ts', 'src/verify/index.ts']) {
    const graph = importGraph(path.join(projectRoot, entry));
    for (const [file, bare] of graph) {
      assert.ok(!file.includes(`${path.sep}io${path.sep}`) && !file.includes(`${path.sep}runtime${path.sep}`), `${entry} reaches ${file}`);
      for (const spec of bare) assert.ok(ALLOWED_PACKAGES.has(spec), `${path.relative(projectRoot, file)} imports ${spec}`);
    }
  }
});

test('the CLI loads ONNX Runtime only for verify (no static import reaches it)', () => {
  const graph = importGraph(path.join(projectRoot, 'cli', 'main.ts'), { dynamic: false });
  const runtimeModules = [...graph.keys()].filter((f) => f.includes(`${path.sep}runtime${path.sep}`));
  assert.deepEqual(runtimeModules, [], 'src/runtime is imported dynamically by the verify command only');
  for (const [file, bare] of graph) {
    for (const spec of bare) assert.ok(!spec.startsWith('onnxruntime'), `${path.relative(projectRoot, file)} imports ${spec} statically`);
  }
});
