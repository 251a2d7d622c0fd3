/**
 * Browser tests of the app (web/): Debian's Chromium driven by playwright-core, against the app as
 * `npm run web` serves it (dist/web/serve.js). Screenshots go to test-output/web-screenshots/.
 */
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import assert from 'node:assert/strict';
import type { Browser, Page } from 'playwright-core';
import { encodeModel, Tensor, type Model } from '../../src/index.js';
import type { TrainerOrt } from '../../src/training/trainer.js';
import { projectRoot } from '../helpers.js';
import { DEFAULT_SETTINGS, parseTrainingData, runTraining, tinyForward, type RunResult, type TrainSettings } from '../../web/train-run.js';
import { startServer } from '../../web/serve.js';

export const CHROMIUM = [process.env['CHROMIUM'], '/usr/bin/chromium', '/usr/bin/chromium-browser'].find((p) => p && existsSync(p));
export const skipWithoutChromium: string | false = CHROMIUM ? false
  : 'Chromium not found at /usr/bin/chromium (apt-get install chromium, or set CHROMIUM); .ci/run installs it';
export const screenshotDir = path.join(projectRoot, 'test-output', 'web-screenshots');

export interface App { browser: Browser; page: Page; url: string; close(): Promise<void> }

/** Chromium on the served app, the page loaded and ready. */
export async function openApp(options: { path?: string; args?: string[] } = {}): Promise<App> {
  const { chromium } = await import('playwright-core');
  const { server, url } = await startServer();
  const browser = await chromium.launch({ executablePath: CHROMIUM!, args: ['--no-sandbox', '--disable-dev-shm-usage', '--enable-precise-memory-info', ...options.args ?? []] });
  const page = await browser.newPage({ acceptDownloads: true, viewport: { width: 1280, height: 900 } });
  await page.goto(new URL(options.path ?? '', url).href);
  if (!options.path) await waitStatus(page, /^Ready/);
  return { browser, page, url, close: async () => { await browser.close(); server.close(); } };
}

/** The page's WebGPU adapter (its features), or why `navigator.gpu.requestAdapter()` gives none. */
export function webGpuAdapter(page: Page): Promise<{ features: string[] } | { missing: string }> {
  return page.evaluate(async () => {
    const gpu = (navigator as Navigator & { gpu?: { requestAdapter(): Promise<{ features: Set<string> } | null> } }).gpu;
    if (!gpu) return { missing: `navigator.gpu is undefined (secure context: ${isSecureContext})` };
    const adapter = await gpu.requestAdapter();
    return adapter ? { features: [...adapter.features] } : { missing: 'navigator.gpu.requestAdapter() returned null' };
  });
}

export const status = (page: Page): Promise<string> => page.locator('#status').innerText();

/** Waits until the live status matches `pattern` (bounded: a hang fails the test, never waits forever). */
export async function waitStatus(page: Page, pattern: RegExp, timeout = 120_000): Promise<string> {
  await page.waitForFunction(([source, flags]) => new RegExp(source!, flags).test(document.getElementById('status')!.textContent ?? ''), [pattern.source, pattern.flags], { timeout, polling: 100 });
  return status(page);
}

/** Drops files on the page as a person would (a drop event with the files), from disk or from bytes. */
export async function dropFiles(page: Page, files: Array<{ name: string; bytes: Uint8Array }>): Promise<void> {
  const payload = files.map((f) => ({ name: f.name, data: Buffer.from(f.bytes).toString('base64') }));
  await page.evaluate((list) => {
    const transfer = new DataTransfer();
    for (const f of list) transfer.items.add(new File([Uint8Array.from(atob(f.data), (c) => c.charCodeAt(0))], f.name));
    const target = document.querySelector('main')!;
    target.dispatchEvent(new DragEvent('dragover', { bubbles: true, cancelable: true, dataTransfer: transfer }));
    target.dispatchEvent(new DragEvent('drop', { bubbles: true, cancelable: true, dataTransfer: transfer }));
  }, payload);
}

export const fileFrom = (file: string): { name: string; bytes: Uint8Array } => ({ name: path.basename(file), bytes: new Uint8Array(readFileSync(file)) });

/** Clicks a download link and returns the bytes downloaded. */
export async function downloadBytes(page: Page, selector: string): Promise<{ name: string; bytes: Uint8Array }> {
  const [download] = await Promise.all([page.waitForEvent('download', { timeout: 60_000 }), page.click(selector)]);
  const file = await download.path();
  return { name: download.suggestedFilename(), bytes: new Uint8Array(readFileSync(file)) };
}

export async function screenshot(page: Page, name: string): Promise<void> {
  mkdirSync(screenshotDir, { recursive: true });
  await page.screenshot({ path: path.join(screenshotDir, `${name.replace(/[^\w.-]+/g, '_')}.png`), fullPage: true });
}

/** The page's visible text, for checks that no stack trace or command-line flag reaches the user. */
export const pageText = (page: Page): Promise<string> => page.locator('body').innerText();

/** Presses Tab until the element with `id` has focus (bounded). */
export async function tabTo(page: Page, id: string): Promise<void> {
  for (let i = 0; i < 80; i++) {
    if (await page.evaluate(() => document.activeElement?.id) === id) return;
    await page.keyboard.press('Tab');
  }
  assert.fail(`#${id} is not reachable with Tab`);
}

/** Waits until the Train tab's live status matches `pattern` (bounded). */
export async function waitTrainStatus(page: Page, pattern: RegExp, timeout = 60_000): Promise<string> {
  await page.waitForFunction(([source, flags]) => new RegExp(source!, flags).test(document.getElementById('train-status')!.textContent ?? ''), [pattern.source, pattern.flags], { timeout, polling: 50 });
  return page.locator('#train-status').innerText();
}

export const mean = (xs: number[]): number => xs.reduce((a, b) => a + b, 0) / xs.length;

/** The loss column of a Train tab CSV's rows for `run`. */
export const lossColumn = (csv: string, run = /^NEFTune alpha 5$/): number[] => csv.trim().split('\n').slice(1).map((row) => row.split(',')).filter((r) => run.test(r[0]!)).map((r) => Number(r[2]));

/** The losses of the page's CSV download (#download-loss). */
export async function downloadedLosses(page: Page): Promise<number[]> {
  return lossColumn(Buffer.from((await downloadBytes(page, '#download-loss')).bytes).toString('utf8'));
}

/** The largest difference, relative to the loss, between a Node run's losses and the page's, step by step. */
export function worstLossGap(node: RunResult, pageLosses: readonly number[]): number {
  let worst = 0;
  node.events.forEach((e, i) => { worst = Math.max(worst, Math.abs(e.loss - pageLosses[i]!) / Math.max(1, e.loss)); });
  return worst;
}

/** The Train tab's run in Node, on onnxruntime-web's wasm, with the bundled data. */
export async function nodeTrainingRun(settings: Partial<TrainSettings>): Promise<RunResult> {
  const { loadRuntime } = await import('../../src/runtime/node.js');
  const wasm = await loadRuntime('wasm');
  const dataset = parseTrainingData(readFileSync(path.join(projectRoot, 'examples', 'data', 'tiny-tokens.jsonl')), 'tiny-tokens.jsonl');
  return runTraining({ ort: wasm.ort as unknown as TrainerOrt, settings: { ...DEFAULT_SETTINGS, ...settings }, dataset, sessionOptions: wasm.sessionOptions });
}

/** The tiny model's logits for `rows` rows of `ids`, on onnxruntime-node. */
async function tinyLogits(model: Model | Uint8Array, ids: BigInt64Array, rows: number): Promise<Float32Array> {
  const { default: ort } = await import('onnxruntime-node');
  const session = await ort.InferenceSession.create(model instanceof Uint8Array ? model : encodeModel(model));
  const out = await session.run({ input_ids: new ort.Tensor('int64', ids, [rows, ids.length / rows]) });
  await session.release();
  return out['logits']!.data as Float32Array;
}

/**
 * A downloaded fine-tuned model against the Node run's parameters set into the builder's model,
 * on onnxruntime-node: the largest logit difference, and how far training moved the logits.
 */
export async function logitsAgainst(downloaded: Uint8Array, node: RunResult): Promise<{ worst: number; moved: number }> {
  const reference = tinyForward(false);
  for (const p of node.params) reference.graph.initializer(p.name!)!.initializer = Tensor.fromArray('float', p.dims, p.toArray(), p.name);
  const ids = BigInt64Array.from({ length: 2 * 12 }, (_, i) => BigInt(1 + ((i * 7) % 63)));
  const [got, want, untrained] = await Promise.all([tinyLogits(downloaded, ids, 2), tinyLogits(reference, ids, 2), tinyLogits(tinyForward(false), ids, 2)]);
  let worst = 0, moved = 0;
  want.forEach((v, i) => { worst = Math.max(worst, Math.abs(v - got[i]!)); moved = Math.max(moved, Math.abs(v - untrained[i]!)); });
  return { worst, moved };
}
