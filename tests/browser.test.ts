/**
 * The library in a real browser: headless Chromium loads web/index.html, which builds a model,
 * patches it and verifies it with onnxruntime-web (wasm), using the same src/ modules as Node.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { projectRoot } from './helpers.js';

const run = promisify(execFile);
const CHROMIUM = [process.env['CHROMIUM'], '/usr/bin/chromium', '/usr/bin/chromium-browser'].find((p) => p && existsSync(p));
const MIME: Record<string, string> = { '.html': 'text/html', '.js': 'text/javascript', '.mjs': 'text/javascript', '.wasm': 'application/wasm', '.json': 'application/json', '.map': 'application/json' };

/** Serves the project folder on loopback (read-only, no path escapes). */
function serve(): Promise<{ server: Server; port: number }> {
  const server = createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://localhost');
    const file = path.join(projectRoot, decodeURIComponent(url.pathname));
    if (!file.startsWith(projectRoot + path.sep) || !existsSync(file) || !statSync(file).isFile()) { res.writeHead(404).end(); return; }
    res.writeHead(200, { 'content-type': MIME[path.extname(file)] ?? 'application/octet-stream' });
    res.end(readFileSync(file));
  });
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve({ server, port: (server.address() as { port: number }).port })));
}

test('patch and verify run in headless Chromium with onnxruntime-web', {
  skip: CHROMIUM ? false : 'Chromium not found (apt-get install chromium, or set CHROMIUM); .ci/run installs it',
  timeout: 180_000,
}, async () => {
  const { server, port } = await serve();
  const profile = mkdtempSync(path.join(tmpdir(), 'neftune-chromium-'));
  try {
    // Async: the page loads its modules from this process's server while Chromium runs.
    const { stdout } = await run(CHROMIUM!, [
      '--headless', '--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync', `--user-data-dir=${profile}`,
      '--virtual-time-budget=120000', '--dump-dom', `http://127.0.0.1:${port}/web/index.html?auto=1`,
    ], { timeout: 150_000, maxBuffer: 1 << 26 });
    const status = /<pre id="status">([\s\S]*?)<\/pre>/.exec(stdout)?.[1];
    const json = /<pre id="result">([\s\S]*?)<\/pre>/.exec(stdout)?.[1] ?? '';
    assert.ok(json, `the page produced no result (status: ${status})`);
    const result = JSON.parse(json.replaceAll('&quot;', '"').replaceAll('&lt;', '<').replaceAll('&gt;', '>').replaceAll('&amp;', '&'));
    assert.equal(result.error, undefined, result.error);
    assert.equal(status, 'done: all checks passed');
    assert.equal(result.report.ok, true, result.report.message);
    assert.equal(result.report.ep, 'wasm');
    assert.deepEqual(result.report.sites[0].checks.map((c: { name: string }) => c.name), ['noise', 'fresh', 'alpha-zero', 'strip']);
  } finally {
    server.close();
    rmSync(profile, { recursive: true, force: true });
  }
});
