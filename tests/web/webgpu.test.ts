/**
 * The app on WebGPU: headless Chromium with SwiftShader's software adapter (no GPU needed; see
 * docs/training-ops.md, "Providers (measured)"). Patch + verify on shared fixtures and a builder
 * model must run and be reported on the webgpu provider; the Train tab must train on it, and its
 * fine-tuned model must be the one a Node run (onnxruntime-web wasm) trains, within float tolerance.
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import type { Page } from 'playwright-core';
import { decodeModel, encodeModel, isPatched, type VerifyReport } from '../../src/index.js';
import { buildTinyGpt } from '../../examples/models.js';
import { readFixture, sameBytes, skipWithoutFixtures } from '../helpers.js';
import { WEBGPU_ARGS } from '../training/browser-runner.js';
import { downloadBytes, downloadedLosses, dropFiles, mean, worstLossGap, webGpuAdapter, nodeTrainingRun, openApp, pageText, screenshot, skipWithoutChromium, logitsAgainst, waitStatus, waitTrainStatus, type App } from './helpers.js';

const FIXTURES = ['ort_bert_toy_optimized.onnx', 'optimum_tiny_distilbert.onnx', 'ort_gpt2_past.onnx'];
const STEPS = 30;

/** The app in Chromium with a WebGPU adapter, or a skip saying why there is none. */
async function openGpuApp(t: TestContext): Promise<(App & { features: string[] }) | undefined> {
  const app = await openApp({ args: WEBGPU_ARGS });
  const adapter = await webGpuAdapter(app.page);
  if ('features' in adapter) return { ...app, features: adapter.features };
  await app.close();
  t.skip(`no WebGPU adapter in Chromium with ${WEBGPU_ARGS.join(' ')}: ${adapter.missing}`);
  return undefined;
}

/** Drops `bytes`, patches with alpha 10, and returns the final status and the downloaded JSON report. */
async function patchAndVerify(page: Page, name: string, bytes: Uint8Array): Promise<{ done: string; report: BrowserReport }> {
  await dropFiles(page, [{ name, bytes }]);
  await waitStatus(page, new RegExp(`Opened ${name.replace('.', '\\.')}`));
  await page.fill('#opt-alpha', '10');
  await page.click('#patch');
  const done = await waitStatus(page, /^Patched and verified|Failed|could not|went wrong/, 60_000);
  return { done, report: JSON.parse(Buffer.from((await downloadBytes(page, '#download-report')).bytes).toString('utf8')) };
}
interface BrowserReport { provider: string; verify: VerifyReport }

/** Histograms drawn from the report; strip restores the original bytes. */
async function histogramsAndStrip(page: Page, name: string, bytes: Uint8Array, report: BrowserReport): Promise<void> {
  const svgs = page.locator('#histograms svg[role=img]');
  assert.equal(await svgs.count(), report.verify.sites.length, `${name}: a histogram per site`);
  for (const [i, site] of report.verify.sites.entries()) {
    assert.ok(site.stats!.count > 0, `${name}: ${site.value} sampled noise`);
    assert.equal((await svgs.nth(i).getAttribute('data-bins'))!, site.stats!.histogram.join(','), 'the plot draws the report\'s histogram');
  }
  await page.click('#strip');
  await waitStatus(page, /^Stripped/);
  assert.ok(sameBytes((await downloadBytes(page, '#download-stripped')).bytes, bytes), `${name}: the stripped download equals the original bytes`);
  await screenshot(page, `webgpu-journey-${name}`);
}

test('WebGPU: patch and verify run on the webgpu provider; checks pass, histograms drawn, strip restores the bytes', { skip: skipWithoutChromium || skipWithoutFixtures, timeout: 120_000 }, async (t) => {
  const app = await openGpuApp(t);
  if (!app) return;
  try {
    const { page } = app;
    const models = [...FIXTURES.map((name) => ({ name, bytes: readFixture(name) })), { name: 'tiny_gpt_builder.onnx', bytes: encodeModel(buildTinyGpt()) }];
    for (const { name, bytes } of models) {
      const { done, report } = await patchAndVerify(page, name, bytes);
      assert.match(done, /^Patched and verified .* on webgpu: all checks passed/, `${name}: ${done}\n${await pageText(page)}`);
      assert.match(await page.locator('#verdict').innerText(), /with the webgpu provider/);
      assert.equal(report.provider, 'webgpu', `${name}: the report names the provider`);
      assert.equal(report.verify.ep, 'webgpu');
      assert.equal(report.verify.ok, true);
      await histogramsAndStrip(page, name, bytes, report);
      t.diagnostic(`${name}: ${report.verify.sites.length} site(s) verified on webgpu (${report.verify.ran}${report.verify.sliceReason ? `: ${report.verify.sliceReason}` : ''})`);
    }

    // A float16 model: adapters without shader-f16 (SwiftShader's) cannot run its Gather; wasm checks it, and the report says why.
    const name = 'genai_tiny_qwen35_decoder_fp16.onnx', bytes = readFixture(name);
    const { done, report } = await patchAndVerify(page, name, bytes);
    const f16 = app.features.includes('shader-f16');
    const provider = f16 ? 'webgpu' : 'wasm';
    assert.match(done, new RegExp(`^Patched and verified .* on ${provider}: all checks passed`), `${name} (adapter ${f16 ? 'with' : 'without'} shader-f16): ${done}\n${await pageText(page)}`);
    assert.equal(report.provider, provider);
    assert.equal(report.verify.ep, provider);
    if (!f16) {
      assert.match(report.verify.notes[0]!, /^webgpu could not check the noise \(.*f16.*\); the noise was checked on wasm instead\.$/);
      assert.match(await page.locator('#notes').innerText(), /webgpu could not check the noise/);
    }
    await histogramsAndStrip(page, name, bytes, report);
    t.diagnostic(`${name}: verified on ${provider}${f16 ? '' : ` (${report.verify.notes[0]})`}`);
  } finally {
    await app.close();
  }
});

test('WebGPU: the Train tab trains the bundled model on webgpu; the loss falls; the fine-tuned model is the Node run\'s', { skip: skipWithoutChromium, timeout: 120_000 }, async (t) => {
  const app = await openGpuApp(t);
  if (!app) return;
  try {
    const { page } = app;
    await page.click('#tab-train');
    await page.fill('#train-steps', String(STEPS));
    await page.click('#train-start');
    const done = await waitTrainStatus(page, /^Trained|^Not trained/, 90_000);
    assert.match(done, new RegExp(`^Trained ${STEPS} steps on webgpu`), `${done}\n${await pageText(page)}`);
    await screenshot(page, 'webgpu-train-done');
    const browserLosses = await downloadedLosses(page);
    assert.equal(browserLosses.length, STEPS);
    const [first, last] = [mean(browserLosses.slice(0, 5)), mean(browserLosses.slice(-5))];
    assert.ok(last < first - 0.5, `loss falls: ${first.toFixed(3)} -> ${last.toFixed(3)}`);

    // The same run in Node on wasm: WebGPU sums in another order, so the runs agree to float
    // tolerance, not bit for bit (measured: losses 4e-6, logits 4e-5 after 30 updates).
    const node = await nodeTrainingRun({ steps: STEPS });
    const worstLoss = worstLossGap(node, browserLosses);
    assert.ok(worstLoss < 1e-4, `losses: WebGPU vs Node wasm differ by ${worstLoss}`);
    const model = await downloadBytes(page, '#download-trained');
    assert.equal(isPatched(decodeModel(model.bytes)), false, 'NEFTune stripped');
    const { worst, moved } = await logitsAgainst(model.bytes, node);
    assert.ok(moved > 0.1, `training moved the logits (by up to ${moved})`);
    assert.ok(worst < 1e-3, `logits: WebGPU-trained vs Node-trained differ by ${worst} (training moved them by up to ${moved})`);
    t.diagnostic(`WebGPU run: loss ${first.toFixed(3)} -> ${last.toFixed(3)}; vs Node wasm: losses ${worstLoss.toExponential(1)}, logits ${worst.toExponential(1)} (moved ${moved.toFixed(2)}); ${done}`);
  } finally {
    await app.close();
  }
});
