import { spawn, spawnSync, type SpawnSyncReturns } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after } from 'node:test';
import { projectRoot } from './helpers.js';

export const cliPath = path.join(projectRoot, 'dist', 'cli', 'bin.cjs');

export interface CliRun { code: number; stdout: string; stderr: string; stdoutBytes: Buffer }

export function runCli(args: string[], options: { cwd?: string; input?: Uint8Array; env?: Record<string, string> } = {}): CliRun {
  const r: SpawnSyncReturns<Buffer> = spawnSync(process.execPath, [cliPath, ...args], {
    cwd: options.cwd ?? projectRoot,
    input: options.input,
    env: { ...process.env, NO_COLOR: '1', ...options.env },
    maxBuffer: 1 << 30,
  });
  return { code: r.status ?? -1, stdout: r.stdout.toString(), stderr: r.stderr.toString(), stdoutBytes: r.stdout };
}

export function runCliJson(args: string[], options: Parameters<typeof runCli>[1] = {}) {
  const r = runCli([...args, '--json'], options);
  let json: any;
  try { json = JSON.parse(r.stdout); } catch { throw new Error(`not JSON (exit ${r.code}): ${r.stdout}\n${r.stderr}`); }
  return { ...r, json };
}

export { spawn };

/** A fresh temp folder removed when the test file ends. */
export function tempDir(label: string): string {
  const dir = mkdtempSync(path.join(tmpdir(), `neftune-${label}-`));
  after(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}
