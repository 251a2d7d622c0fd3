/** What the CLI does before any command: its version, from any working directory. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { projectRoot } from './helpers.js';
import { runCli, tempDir } from './cli-helpers.js';

const { version } = JSON.parse(readFileSync(path.join(projectRoot, 'package.json'), 'utf8')) as { version: string };

test('--version is the package version from any working directory, another project\'s package.json included', () => {
  const elsewhere = tempDir('version');
  writeFileSync(path.join(elsewhere, 'package.json'), JSON.stringify({ name: 'some-project', version: '9.9.9-not-neftune' }));
  const bundled = runCli(['--version'], { cwd: elsewhere });
  assert.equal(bundled.code, 0, bundled.stderr);
  assert.equal(bundled.stdout.trim(), version);
  // Without the bundle (a plain tsc build) the bin loads the ES modules: the same answer.
  const modules = spawnSync(process.execPath, [path.join(projectRoot, 'dist', 'cli', 'main.js'), '--version'], { cwd: elsewhere, encoding: 'utf8' });
  assert.equal(modules.status, 0, modules.stderr);
  assert.equal(modules.stdout.trim(), version);
});
