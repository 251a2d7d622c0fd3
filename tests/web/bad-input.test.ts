/**
 * Bad input in the page: each gets words (what, where, what to do), never a stack trace or a
 * command-line flag, and the previous model's results are gone. Also: the page opened from a file
 * or served from the wrong folder says so; cancel stops a patch and the page stays usable.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createReadStream, existsSync, statSync } from 'node:fs';
import { createServer } from 'node:http';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import type { Page } from 'playwright-core';
import { fixturesDir, projectRoot, readFixture, skipWithoutFixtures } from '../helpers.js';
import { dropFiles, openApp, pageText, screenshot, skipWithoutChromium, waitStatus } from './helpers.js';

const skip = skipWithoutChromium || skipWithoutFixtures;

/** The page shows an error in words and nothing of a previous result. */
async function assertWordsOnly(page: Page, what: RegExp): Promise<void> {
  const box = page.locator('#error');
  assert.equal(await box.isVisible(), true, 'the error is shown');
  const text = await box.innerText();
  assert.match(text, what);
  assert.equal((await box.locator('p').count()), 3, 'what, where, what to do');
  const all = await pageText(page);
  assert.doesNotMatch(all, /(^|\s)--[a-z]/m, 'no command-line flags');
  assert.doesNotMatch(all, /\(\S*:\d+:\d+\)|\.js:\d+|Error:/, 'no stack traces');
  assert.doesNotMatch(all, /all checks passed|Passed:/, 'no previous result');
  for (const id of ['#summary', '#results', '#stripped']) assert.equal(await page.locator(id).isVisible(), false, `${id} reset`);
}

test('browser app: bad files get words, and the previous result goes', { skip, timeout: 180_000 }, async () => {
  const app = await openApp();
  try {
    const { page } = app;
    const good = readFixture('ort_embed_layer_norm_format3.onnx');
    // A result first, so each bad file must also clear it.
    await dropFiles(page, [{ name: 'good.onnx', bytes: good }]);
    await waitStatus(page, /^Opened good\.onnx/);
    await page.click('#patch');
    await waitStatus(page, /all checks passed/, 120_000);
    const cases: Array<[string, Uint8Array, RegExp]> = [
      ['notes.onnx', new TextEncoder().encode('This is a text file, not a model.\n'), /not a readable ONNX model[\s\S]*notes\.onnx[\s\S]*download/],
      ['truncated.onnx', good.subarray(0, Math.floor(good.length / 2)), /not a readable ONNX model[\s\S]*truncated\.onnx/],
      ['empty.onnx', new Uint8Array(0), /not a readable ONNX model[\s\S]*empty\.onnx/],
      ['picture.png', Uint8Array.of(0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0, 0, 0, 13), /not a readable ONNX model[\s\S]*picture\.png/],
    ];
    for (const [name, bytes, what] of cases) {
      await dropFiles(page, [{ name, bytes }]);
      await waitStatus(page, /not a readable ONNX model/);
      await assertWordsOnly(page, what);
      await screenshot(page, `bad-${name}`);
      // Still usable: the good model opens again.
      await dropFiles(page, [{ name: 'good.onnx', bytes: good }]);
      await waitStatus(page, /^Opened good\.onnx/);
      assert.equal(await page.locator('#error').isVisible(), false, 'the error goes with the next file');
    }
  } finally {
    await app.close();
  }
});

test('browser app: a model without its data file says which file is missing and still patches', { skip, timeout: 180_000 }, async () => {
  const app = await openApp();
  try {
    const { page } = app;
    await page.setInputFiles('#file', path.join(fixturesDir, 'genai_tiny_llama_fp16_extdata.onnx'));
    await waitStatus(page, /^Opened/);
    const data = await page.locator('#data-files').innerText();
    assert.match(data, /model\.onnx\.data\s+\d+\s+MISSING/);
    assert.match(data, /Drop or pick the \.onnx together with its data file/);
    await page.click('#patch');
    const done = await waitStatus(page, /^Patched and verified|could not|went wrong/, 120_000);
    const text = await pageText(page);
    assert.doesNotMatch(text, /OrtRun|ERROR_CODE|failed to call|(^|\s)--[a-z]/, 'no runtime internals or flags');
    assert.match(await page.locator('#verdict').innerText(), /external data missing: model\.onnx\.data/, done);
    await screenshot(page, 'missing-data-file');
  } finally {
    await app.close();
  }
});

test('browser app: opened from a file, or served from the wrong folder, the page says so instead of "ready"', { skip: skipWithoutChromium, timeout: 60_000 }, async () => {
  const app = await openApp();
  // The project folder served as it is: web/index.html without its built scripts beside it.
  const wrong = createServer((req, res) => {
    const file = path.join(projectRoot, decodeURIComponent(new URL(req.url ?? '/', 'http://x').pathname));
    if (!file.startsWith(projectRoot + path.sep) || !existsSync(file) || !statSync(file).isFile()) { res.writeHead(404).end(); return; }
    res.writeHead(200, { 'content-type': file.endsWith('.html') ? 'text/html' : 'text/javascript' });
    createReadStream(file).pipe(res);
  });
  await new Promise<void>((resolve) => wrong.listen(0, '127.0.0.1', resolve));
  try {
    const { page } = app;
    await page.goto(pathToFileURL(path.join(projectRoot, 'dist', 'web', 'static', 'index.html')).href);
    assert.match(await waitStatus(page, /opened as a file/), /npm run web/);
    await screenshot(page, 'opened-from-file');
    await page.goto(`http://127.0.0.1:${(wrong.address() as { port: number }).port}/web/index.html`);
    assert.match(await waitStatus(page, /scripts were not found/), /npm run web/);
    assert.doesNotMatch(await pageText(page), /Ready/);
    assert.equal(await page.locator('#file').isDisabled(), true, 'no file can be chosen into a page that cannot work');
    await screenshot(page, 'wrong-folder');
  } finally {
    wrong.close();
    await app.close();
  }
});

test('browser app: cancel stops a patch, and the page patches again afterwards', { skip, timeout: 180_000 }, async () => {
  const app = await openApp();
  try {
    const { page } = app;
    await dropFiles(page, [{ name: 'bert.onnx', bytes: readFixture('ort_bert_toy_optimized.onnx') }]);
    await waitStatus(page, /^Opened bert\.onnx/);
    await page.click('#patch');
    // The first patch of a worker loads ONNX Runtime, so the cancel lands while it works.
    await page.click('#cancel');
    await waitStatus(page, /^Cancelled patching\. Opened bert\.onnx/);
    assert.equal(await page.locator('#results').isVisible(), false, 'no result of the cancelled patch');
    await page.click('#patch');
    assert.match(await waitStatus(page, /^Patched and verified|went wrong/, 120_000), /all checks passed/);
  } finally {
    await app.close();
  }
});

test('browser app: options are checked with the schema\'s words, named by their labels', { skip, timeout: 120_000 }, async () => {
  const app = await openApp();
  try {
    const { page } = app;
    await dropFiles(page, [{ name: 'bert.onnx', bytes: readFixture('ort_bert_toy_optimized.onnx') }]);
    await waitStatus(page, /^Opened/);
    await page.fill('#opt-alpha', '-1');
    await page.fill('#opt-seed', '1.5');
    await page.click('#patch');
    await waitStatus(page, /^Not patched/);
    assert.equal(await page.locator('#opt-alpha-invalid').innerText(), 'Alpha must be a finite number > 0 (the paper uses 5, 10 or 15).');
    assert.equal(await page.locator('#opt-seed-invalid').innerText(), 'Seed must be an integer with |seed| <= 2^24 (it is stored as a float).');
    assert.equal(await page.locator('#opt-alpha').getAttribute('aria-invalid'), 'true');
    assert.equal(await page.evaluate(() => document.activeElement?.id), 'opt-alpha', 'focus goes to the first wrong field');
    // A library error that names an option: mask mode with a mask input the model does not have.
    await page.fill('#opt-alpha', '');
    await page.fill('#opt-seed', '');
    await page.selectOption('#opt-mode', 'mask');
    await page.fill('#opt-maskInput', 'no_such_mask');
    await page.click('#patch');
    await waitStatus(page, /An option does not fit/);
    const error = await page.locator('#error').innerText();
    assert.match(error, /no_such_mask/);
    assert.match(error, /"Mask input"/, 'the option is named by its label');
    assert.doesNotMatch(await pageText(page), /(^|\s)--[a-z]/m);
    await screenshot(page, 'option-errors');
  } finally {
    await app.close();
  }
});
