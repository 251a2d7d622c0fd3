/**
 * The Train tab's worker: fine-tunes the bundled tiny model on ONNX Runtime (wasm, or WebGPU when
 * the browser has an adapter), posts every update's loss, and at the end hands back the fine-tuned
 * forward model (NEFTune stripped) and the loss CSV. Stop is a message, honoured between updates.
 */
import protobuf from 'protobufjs/light.js';
import Long from 'long';
import { encodeModel, OnnxNeftuneError } from '../src/graph/index.js';
import { exportFineTuned } from '../src/training/export.js';
import type { TrainerOrt } from '../src/training/trainer.js';
import type { TrainReply, TrainRequest } from './protocol.js';
import { BUNDLED_DATA, lossCsv, parseTrainingData, runAlphas, runName, runTraining, type RunResult } from './train-run.js';
import { loadRuntime, workerError } from './worker-shared.js';

protobuf.util.Long = Long as unknown as typeof protobuf.util.Long;
protobuf.configure();

interface WorkerScope { postMessage(message: TrainReply): void; onmessage: ((event: MessageEvent<TrainRequest>) => void) | null }
const scope = globalThis as unknown as WorkerScope;

let stopRequested = false;
let running = false;
/** What the worker is doing, for an error's words. */
let doing = 'reading the training data';

scope.onmessage = (event) => {
  const request = event.data;
  if (request.type === 'stop') { stopRequested = true; return; }
  if (running) return;
  running = true;
  stopRequested = false;
  doing = 'reading the training data';
  train(request).catch((error) => scope.postMessage({ type: 'error', error: workerError(error, doing) }))
    .finally(() => { running = false; });
};

/** A macrotask turn, so a Stop message posted meanwhile is handled before the next update. */
const yieldToMessages = (): Promise<boolean> => new Promise((resolve) => setTimeout(() => resolve(stopRequested), 0));

async function train(request: Extract<TrainRequest, { type: 'start' }>): Promise<void> {
  const dataName = request.data?.name ?? BUNDLED_DATA;
  const bytes = request.data
    ? new Uint8Array(await request.data.arrayBuffer())
    : new Uint8Array(await (await fetch(new URL(`data/${BUNDLED_DATA}`, location.href))).arrayBuffer());
  const dataset = parseTrainingData(bytes, dataName);
  doing = 'training the tiny model on';
  const runtime = await loadRuntime();
  const alphas = runAlphas(request.settings);
  let provider = runtime.provider;
  const started = (note?: string) => scope.postMessage({ type: 'started', provider, rows: dataset.rows.length, tokens: dataset.tokens, skipped: dataset.skipped, dataName, runs: alphas.map(runName), ...(note ? { note } : {}) });
  started();
  const t0 = performance.now();
  const results: RunResult[] = [];
  for (const [run, alpha] of alphas.entries()) {
    let stepped = false;
    const trainOn = (on: string) => runTraining({
      ort: runtime.ort as unknown as TrainerOrt, settings: { ...request.settings, alpha }, dataset,
      sessionOptions: { executionProviders: on === 'wasm' ? ['wasm'] : runtime.providers },
      ...(on === 'webgpu' ? { keepOnDevice: 'gpu-buffer' as const } : {}),
      onStep: (event) => { stepped = true; scope.postMessage({ type: 'step', run, event }); },
      shouldStop: yieldToMessages,
    });
    let result: RunResult;
    try {
      result = await trainOn(provider);
    } catch (error) {
      // WebGPU failing before the first step (a session it cannot create or run): train on wasm, and say so.
      if (provider === 'wasm' || stepped || run > 0 || error instanceof OnnxNeftuneError) throw error;
      const why = workerError(error, doing).parts.join('');
      provider = 'wasm';
      started(`WebGPU could not run the training step (${why}); training on wasm instead.`);
      result = await trainOn(provider);
    }
    results.push(result);
    if (result.stopped) break;
  }
  const first = results[0]!;
  const exported = exportFineTuned(first.forward, first.params);
  scope.postMessage({
    type: 'trained', model: new Blob([encodeModel(exported.model) as Uint8Array<ArrayBuffer>], { type: 'application/octet-stream' }),
    csv: lossCsv(results.map((r, i) => ({ name: runName(alphas[i]!), events: r.events }))), steps: first.events.length, stopped: results.some((r) => r.stopped), provider,
    seconds: (performance.now() - t0) / 1000,
  });
}
