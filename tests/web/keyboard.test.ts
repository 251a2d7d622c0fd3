/** Keyboard-only use of the page, labelled controls, and the server refusing path escapes. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { fixturesDir, skipWithoutFixtures } from '../helpers.js';
import { resolveRequest, startServer } from '../../web/serve.js';
import { openApp, screenshot, skipWithoutChromium, tabTo, waitStatus } from './helpers.js';

test('browser app: keyboard only, from choosing the file to downloading the result; every control labelled', { skip: skipWithoutChromium || skipWithoutFixtures, timeout: 180_000 }, async () => {
  const app = await openApp();
  try {
    const { page } = app;
    await tabTo(page, 'file');
    const [chooser] = await Promise.all([page.waitForEvent('filechooser'), page.keyboard.press('Space')]);
    await chooser.setFiles(path.join(fixturesDir, 'optimum_tiny_distilbert.onnx'));
    await waitStatus(page, /^Opened/);
    await tabTo(page, 'opt-alpha');
    await page.keyboard.type('15');
    await tabTo(page, 'opt-allCandidates');
    await page.keyboard.press('Space');
    await tabTo(page, 'patch');
    await page.keyboard.press('Enter');
    assert.match(await waitStatus(page, /^Patched and verified|went wrong|does not fit/, 120_000), /all checks passed/);
    await tabTo(page, 'download-model');
    const [download] = await Promise.all([page.waitForEvent('download'), page.keyboard.press('Enter')]);
    assert.equal(download.suggestedFilename(), 'optimum_tiny_distilbert.neftune.onnx');
    await screenshot(page, 'keyboard-only');
    const unlabelled = await page.evaluate(() => [...document.querySelectorAll('input, select, button, a[href]')]
      .filter((e) => (e as HTMLElement).offsetParent !== null)
      .filter((e) => !((e as HTMLInputElement).labels?.length || e.getAttribute('aria-label') || e.textContent?.trim()))
      .map((e) => e.outerHTML.slice(0, 80)));
    assert.deepEqual(unlabelled, [], 'every visible control has a label');
    assert.equal(await page.locator('#status').getAttribute('aria-live'), 'polite');
  } finally {
    await app.close();
  }
});

test('npm run web: the server serves the app and ONNX Runtime, and refuses paths that leave them', async () => {
  assert.ok(resolveRequest('/')?.endsWith(path.join('static', 'index.html')));
  assert.ok(resolveRequest('/ort/ort.wasm.min.mjs'));
  for (const escape of ['/../../package.json', '/%2e%2e/%2e%2e/package.json', '/ort/../../../package.json', '/ort/%2e%2e/package.json', '/..%2f..%2fpackage.json', '/%00', '/%E0%A4%A']) {
    assert.equal(resolveRequest(escape), undefined, escape);
  }
  const { server, url } = await startServer();
  try {
    assert.equal((await fetch(url)).status, 200);
    assert.equal((await fetch(`${url}ort/..%2f..%2f..%2fpackage.json`)).status, 404);
    assert.equal((await fetch(`${url}app.js`)).headers.get('content-type'), 'text/javascript');
  } finally {
    server.close();
  }
});
