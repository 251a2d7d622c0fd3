/** The CLI reads a model from stdin as it arrives and stops at the first impossible byte (issue 16). */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { cliPath } from '../cli-helpers.js';
import { encodeModel } from '../../src/graph/index.js';
import { buildTinyGpt } from '../../examples/models.js';

/** Pipes `chunk` repeatedly into `neftune args` until the CLI stops reading or `limit` bytes went in. */
function pipeEndless(args: string[], chunk: Uint8Array, limit: number): Promise<{ code: number | null; stdout: string; written: number }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [cliPath, ...args], { stdio: ['pipe', 'pipe', 'pipe'], env: { ...process.env, NO_COLOR: '1' } });
    let written = 0, stdout = '';
    child.stdout.on('data', (d) => { stdout += d; });
    child.stdin.on('error', () => { /* EPIPE once the CLI stops reading: expected */ });
    const pump = () => {
      while (written < limit && !child.stdin.destroyed) {
        written += chunk.length;
        if (!child.stdin.write(chunk)) { child.stdin.once('drain', pump); return; }
      }
      child.stdin.end();
    };
    pump();
    child.on('close', (code) => resolve({ code, stdout, written }));
  });
}

test('1 GiB of zeros on stdin fails at byte 0 without reading it all (inspect and patch)', { timeout: 60_000 }, async () => {
  const zeros = new Uint8Array(1 << 20);
  for (const args of [['inspect', '-', '--json'], ['patch', '-', '-o', '-']]) {
    const r = await pipeEndless(args, zeros, 1 << 30);
    assert.equal(r.code, 4, `${args.join(' ')}: ${r.stdout}`);
    assert.ok(r.written < 256 << 20, `${args.join(' ')}: the CLI kept reading (${r.written} bytes went in)`);
    if (args.includes('--json')) {
      const error = JSON.parse(r.stdout).files[0].error;
      assert.equal(error.code, 'ONNX_DECODE');
      assert.match(error.message, /byte offset 0/);
    }
  }
});

test('a model arriving on stdin in odd chunks is read whole', { timeout: 30_000 }, async () => {
  const model = encodeModel(buildTinyGpt());
  const child = spawn(process.execPath, [cliPath, 'inspect', '-', '--json'], { stdio: ['pipe', 'pipe', 'inherit'] });
  let out = '';
  child.stdout.on('data', (d) => { out += d; });
  // Odd chunk sizes: the field-by-field check must not depend on where chunks end.
  for (let at = 0; at < model.length; at += 777) child.stdin.write(model.subarray(at, at + 777));
  child.stdin.end();
  const code = await new Promise((resolve) => child.on('close', resolve));
  assert.equal(code, 0, out);
  assert.equal(JSON.parse(out).files[0].model.bytes, model.length);
});
