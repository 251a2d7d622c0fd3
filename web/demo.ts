/**
 * The browser page's code: the same graph library, pass and verification as in Node, with
 * onnxruntime-web as the runtime. Served from the project root (see tests/browser.test.ts).
 */
import * as ort from 'onnxruntime-web';
import { decodeModel, encodeModel, type Model } from '../src/graph/index.js';
import { applyNeftune } from '../src/passes/index.js';
import { verifyNeftune, type OrtLike } from '../src/verify/index.js';
import { buildTinyTrainingGraph } from '../examples/models.js';

const runtime = ort as unknown as OrtLike & { env: { wasm: { numThreads: number; wasmPaths: string } } };
runtime.env.wasm.numThreads = 1;
runtime.env.wasm.wasmPaths = '/node_modules/onnxruntime-web/dist/';

const status = document.getElementById('status')!;
const result = document.getElementById('result')!;

async function run(model: Model, label: string): Promise<void> {
  status.textContent = `patching ${label} ...`;
  const patch = applyNeftune(model, { alphaInput: true });
  const bytes = encodeModel(model);
  status.textContent = `verifying ${label} (${bytes.length} bytes) on wasm ...`;
  const report = await verifyNeftune(decodeModel(bytes), { ort: runtime, ep: 'wasm', sessionOptions: { executionProviders: ['wasm'] } });
  result.textContent = JSON.stringify({ label, sites: patch.record.sites.map((s) => s.value), report }, null, 2);
  status.textContent = report.ok ? 'done: all checks passed' : 'done: checks failed';
}

function fail(error: unknown): void {
  status.textContent = 'error';
  result.textContent = JSON.stringify({ error: String((error as Error)?.stack ?? error) });
}

document.getElementById('example')!.addEventListener('click', () => run(buildTinyTrainingGraph(), 'example').catch(fail));
document.getElementById('file')!.addEventListener('change', async (event) => {
  const file = (event.target as HTMLInputElement).files?.[0];
  if (file) await run(decodeModel(new Uint8Array(await file.arrayBuffer())), file.name).catch(fail);
});
if (new URLSearchParams(location.search).has('auto')) run(buildTinyTrainingGraph(), 'example').catch(fail);
