/**
 * The Train tab in Chromium: the bundled tiny model fine-tuned in the page's worker (wasm), started
 * with the keyboard only; the live plot and the falling loss; the downloaded model against the same
 * run in Node (onnxruntime-web wasm there too), evaluated on onnxruntime-node; Stop; bad data in words.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { Page } from 'playwright-core';
import { decodeModel, isPatched } from '../../src/index.js';
import { downloadBytes, downloadedLosses, lossColumn, mean, nodeTrainingRun, worstLossGap, openApp, logitsAgainst, pageText, screenshot, skipWithoutChromium, tabTo, waitTrainStatus, type App } from './helpers.js';

const STEPS = 60;


async function showTrainTab(page: Page): Promise<void> {
  await page.click('#tab-train');
  assert.equal(await page.locator('#panel-train').isVisible(), true);
}

async function trainTest(name: string, body: (app: App) => Promise<void>): Promise<void> {
  await test(name, { skip: skipWithoutChromium, timeout: 120_000 }, async () => {
    const app = await openApp();
    try { await body(app); } finally { await app.close(); }
  });
}

await trainTest('Train tab: keyboard-only start; the plot grows per step and the loss falls; the fine-tuned model is the Node run\'s', async ({ page }) => {
  // Keyboard only: the tablist (arrows move between tabs), the steps field, Start.
  await tabTo(page, 'tab-patch');
  await page.keyboard.press('ArrowRight');
  assert.equal(await page.evaluate(() => document.activeElement?.id), 'tab-train');
  assert.equal(await page.getAttribute('#tab-train', 'aria-selected'), 'true');
  assert.equal(await page.locator('#panel-patch').isVisible(), false, 'the other panel is hidden');
  await tabTo(page, 'train-steps');
  await page.keyboard.press('Control+A');
  await page.keyboard.type(String(STEPS));
  await tabTo(page, 'train-start');
  await page.keyboard.press('Enter');
  // Live: the status counts steps while the plot grows.
  await waitTrainStatus(page, /step \d+ of 60, loss \d+\.\d+, \d+ tokens\/s/);
  const done = await waitTrainStatus(page, /^Trained|^Not trained/);
  assert.match(done, /^Trained 60 steps on wasm/, done);
  assert.equal(await page.getAttribute('#train-status', 'aria-live'), 'polite');
  const points = await page.locator('#train-plot polyline.curve').getAttribute('points');
  assert.equal(points!.trim().split(/\s+/).length, STEPS, 'one point per step');
  await screenshot(page, 'train-done');

  const model = await downloadBytes(page, '#download-trained');
  assert.equal(model.name, 'tiny-gpt.fine-tuned.neftune.onnx');
  const browserLosses = await downloadedLosses(page);
  assert.equal(browserLosses.length, STEPS);
  const [first, last] = [mean(browserLosses.slice(0, 5)), mean(browserLosses.slice(-5))];
  assert.ok(last < first - 1, `loss falls: ${first.toFixed(3)} -> ${last.toFixed(3)}`);

  // The same run in Node, on onnxruntime-web's wasm: the same losses, and the same parameters.
  const node = await nodeTrainingRun({ steps: STEPS });
  const worstLoss = worstLossGap(node, browserLosses);
  assert.ok(worstLoss < 1e-5, `losses: browser vs Node differ by ${worstLoss}`);

  // The download: the unpatched forward graph; evaluated on onnxruntime-node, the logits of the
  // Node run's parameters set straight into the builder's model.
  const downloaded = decodeModel(model.bytes);
  assert.equal(isPatched(downloaded), false, 'NEFTune stripped');
  const { worst, moved } = await logitsAgainst(model.bytes, node);
  assert.ok(worst < 1e-4, `logits: downloaded vs Node-trained differ by ${worst}`);
  assert.ok(moved > 0.1, `training moved the logits (by up to ${moved})`);
  console.log(`# browser run: loss ${first.toFixed(3)} -> ${last.toFixed(3)}; browser vs Node: losses ${worstLoss}, logits ${worst}; ${done}`);
});

await trainTest('Train tab: Stop ends the run between steps; its model downloads; the page stays usable', async ({ page }) => {
  await showTrainTab(page);
  await page.fill('#train-steps', '100000');
  await page.click('#train-start');
  assert.equal(await page.locator('#train-start').isDisabled(), true, 'one run at a time');
  await waitTrainStatus(page, /step [5-9]\d* of 100000/);
  await page.click('#train-stop');
  const stopped = await waitTrainStatus(page, /^Stopped|^Not trained/);
  const steps = Number(/^Stopped after (\d+) of 100000 steps/.exec(stopped)?.[1]);
  assert.ok(steps >= 5 && steps < 100000, stopped);
  const csv = await downloadBytes(page, '#download-loss');
  assert.equal(lossColumn(Buffer.from(csv.bytes).toString('utf8')).length, steps, 'the CSV has the steps done');
  assert.ok((await downloadBytes(page, '#download-trained')).bytes.length > 0);
  await screenshot(page, 'train-stopped');
  // Usable: another run (no NEFTune, SGD) starts and finishes, and the Patch tab still works.
  await page.fill('#train-steps', '3');
  await page.uncheck('#train-neftune');
  await page.selectOption('#train-optimizer', 'sgd');
  await page.click('#train-start');
  assert.match(await waitTrainStatus(page, /^Trained|^Not trained/), /^Trained 3 steps/);
  assert.equal((await downloadBytes(page, '#download-trained')).name, 'tiny-gpt.fine-tuned.onnx');
  await page.click('#tab-patch');
  assert.match(await page.locator('#status').innerText(), /^Ready/);
  assert.equal(await page.locator('#file').isEnabled(), true);
});

await trainTest('Train tab: compare trains with and without NEFTune on the same seed and draws both curves', async ({ page }) => {
  await showTrainTab(page);
  await page.fill('#train-steps', '20');
  await page.fill('#train-seed', '4');
  await page.check('#train-compare');
  await page.click('#train-start');
  assert.match(await waitTrainStatus(page, /^Trained|^Not trained/), /^Trained 20 steps .* with NEFTune alpha 5, .* with no NEFTune/);
  assert.equal(await page.locator('#train-plot polyline.curve').count(), 2, 'two curves');
  assert.match(await page.locator('#train-plot svg').getAttribute('aria-label') ?? '', /NEFTune alpha 5: 20 steps.*no NEFTune: 20 steps/);
  await screenshot(page, 'train-compare');
  const csv = Buffer.from((await downloadBytes(page, '#download-loss')).bytes).toString('utf8');
  const [noisy, plain] = [lossColumn(csv), lossColumn(csv, /^no NEFTune$/)];
  assert.equal(noisy.length, 20);
  assert.notDeepEqual(noisy, plain, 'the noise changes the losses');
  // The plain curve is the run without NEFTune on the same seed (same batches), as Node computes it.
  const node = await nodeTrainingRun({ steps: 20, seed: 4, alpha: null });
  node.events.forEach((e, i) => assert.ok(Math.abs(e.loss - plain[i]!) < 1e-5, `step ${i + 1}: Node ${e.loss}, browser ${plain[i]}`));
});

await trainTest('Train tab: bad token data and bad options are refused in words, naming the line and the field', async ({ page }) => {
  await showTrainTab(page);
  const bad = [
    { name: 'broken.jsonl', text: '{"input_ids": [1, 6, 7, 2]}\n\n{"input_ids": [1, 6, 7\n', line: 3, says: /not JSON/ },
    { name: 'other-vocab.jsonl', text: '{"input_ids": [1, 6, 7, 2]}\n{"input_ids": [1, 99, 7, 2]}\n', line: 2, says: /99, outside the model's vocabulary of 64 tokens/ },
  ];
  for (const file of bad) {
    await page.setInputFiles('#train-file', { name: file.name, mimeType: 'application/jsonl', buffer: Buffer.from(file.text) });
    assert.equal(await page.isChecked('#data-own'), true, 'picking a file selects it as the data');
    await page.click('#train-start');
    const said = await waitTrainStatus(page, /^Not trained|^Trained/);
    assert.match(said, new RegExp(`^Not trained\\. The training data cannot be used \\(${file.name.replace('.', '\\.')}, line ${file.line}\\)\\. Correct line ${file.line} of`), said);
    const box = await page.locator('#train-error').innerText();
    assert.match(box, new RegExp(`line ${file.line}: `));
    assert.match(box, file.says);
    assert.doesNotMatch(await pageText(page), /\bat \w+ \(|Error:|--\w/, 'no stack trace or command-line flag');
    assert.equal(await page.locator('#train-start').isEnabled(), true);
  }
  await screenshot(page, 'train-bad-data');
  await page.fill('#train-lr', '0');
  await page.fill('#train-seed', '1.5');
  await page.click('#train-start');
  const said = await page.locator('#train-status').innerText();
  assert.match(said, /^Not started: Learning rate must be a number above 0 and at most 10; "0" is not\. Seed must be a whole number/);
  assert.equal(await page.getAttribute('#train-lr', 'aria-invalid'), 'true');
  assert.equal(await page.evaluate(() => document.activeElement?.id), 'train-lr', 'focus goes to the first field to fix');
});
