/**
 * The whole journey in Chromium on shared fixtures, one after another in the same tab (so each new
 * file must reset the page): drop, inspect, options, patch, verify, histogram, downloads, strip,
 * and the stripped download equals the original bytes. Also the external-data model with its data file.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { decodeModel, readPatchRecord } from '../../src/index.js';
import { fixturesDir, readFixture, sameBytes, skipWithoutFixtures } from '../helpers.js';
import { downloadBytes, dropFiles, fileFrom, openApp, pageText, screenshot, skipWithoutChromium, waitStatus } from './helpers.js';

const JOURNEY = ['ort_bert_toy_optimized.onnx', 'optimum_tiny_distilbert.onnx', 'genai_tiny_qwen35_decoder_fp16.onnx', 'ort_gpt2_past.onnx', 'ort_bloom3_ortmodule_training.onnx', 'ort_embed_layer_norm_format3.onnx'];

test('browser app: the whole journey on shared fixtures', { skip: skipWithoutChromium || skipWithoutFixtures, timeout: 300_000 }, async (t) => {
  const app = await openApp();
  try {
    for (const name of JOURNEY) {
      await t.test(name, async () => {
        const { page } = app;
        const original = readFixture(name);
        await dropFiles(page, [{ name, bytes: original }]);
        await waitStatus(page, new RegExp(`Opened ${name.replace('.', '\\.')}`));
        // Inspect: summary and the candidates table with its default target, as `inspect` shows them.
        const facts = await page.locator('#facts').innerText();
        assert.match(facts, /IR version\s+\d+/);
        assert.match(facts, /NEFTune patch\s+not patched/);
        assert.ok(await page.locator('#candidates tbody tr').count() >= 1, 'candidates listed');
        assert.equal(await page.locator('#candidates tbody tr td:first-child', { hasText: 'yes' }).count() >= 1, true, 'a default target marked');
        assert.match(await page.locator('#target').innerText(), /^Default target: /);
        // Options from the schema: alpha and seed typed in, recorded in the patch.
        await page.fill('#opt-alpha', '10');
        await page.fill('#opt-seed', '7');
        await page.click('#patch');
        const done = await waitStatus(page, /^Patched and verified|Failed|could not|went wrong/, 180_000);
        assert.match(done, /all checks passed/, `${name}: ${done}\n${await pageText(page)}`);
        const svgs = page.locator('#histograms svg[role=img]');
        assert.ok(await svgs.count() >= 1, 'a histogram per site');
        const model = await downloadBytes(page, '#download-model');
        assert.equal(model.name, name.replace(/\.onnx$/, '.neftune.onnx'));
        const record = readPatchRecord(decodeModel(model.bytes))!;
        assert.equal(record.options.alpha, 10);
        assert.equal(record.options.seed, 7);
        const report = JSON.parse(Buffer.from((await downloadBytes(page, '#download-report')).bytes).toString('utf8'));
        assert.equal(report.verify.ok, true);
        assert.equal(report.provider, 'wasm');
        assert.equal(report.verify.ep, 'wasm');
        for (const [i, site] of report.verify.sites.entries()) {
          const bins = (await svgs.nth(i).getAttribute('data-bins'))!.split(',').map(Number);
          assert.deepEqual(bins, site.stats.histogram, 'the plot draws the report\'s histogram');
          assert.equal(bins.reduce((a: number, b: number) => a + b, 0), site.stats.count, 'every sampled element is in a bin');
        }
        await page.click('#strip');
        await waitStatus(page, /^Stripped/);
        const stripped = await downloadBytes(page, '#download-stripped');
        assert.ok(sameBytes(stripped.bytes, original), `${name}: the stripped download equals the original bytes`);
        await screenshot(page, `journey-${name}`);
      });
    }
  } finally {
    await app.close();
  }
});

test('browser app: an external-data model with its data file patches and verifies the whole model', { skip: skipWithoutChromium || skipWithoutFixtures, timeout: 180_000 }, async () => {
  const app = await openApp();
  try {
    const { page } = app;
    const model = fileFrom(path.join(fixturesDir, 'genai_tiny_llama_fp16_extdata.onnx'));
    // Picked, not dropped: the file chooser with both files selected.
    await page.setInputFiles('#file', [path.join(fixturesDir, 'genai_tiny_llama_fp16_extdata.onnx'), path.join(fixturesDir, 'model.onnx.data')]);
    await waitStatus(page, /^Opened genai_tiny_llama_fp16_extdata\.onnx/);
    assert.match(await page.locator('#data-files').innerText(), /model\.onnx\.data\s+\d+\s+yes/);
    await page.click('#patch');
    const done = await waitStatus(page, /^Patched and verified|Failed|could not|went wrong/, 150_000);
    assert.match(done, /all checks passed/, await pageText(page));
    assert.match(await page.locator('#verdict').innerText(), /running the whole model/);
    await page.click('#strip');
    await waitStatus(page, /^Stripped/);
    assert.ok(sameBytes((await downloadBytes(page, '#download-stripped')).bytes, model.bytes), 'strip restores the .onnx bytes');
    await screenshot(page, 'external-data');
  } finally {
    await app.close();
  }
});
