/**
 * Training benchmark against ONNX Runtime's own training runtime: onnxruntime-web 1.19.2's
 * TrainingSession (wasm, its AdamWOptimizer) on hand-written ORT training artifacts
 * (bench/ort119-artifacts.ts), vs our step graph + Trainer on onnxruntime-web 1.30 wasm and on
 * onnxruntime-node CPU, the same model from the same weights on the same batches, AdamW lr 0.001
 * (the 1.19.2 runtime's fixed rate), no NEFTune. One process per runtime (peak RSS from GNU time),
 * rounds interleaved; tokens/s is the median over rounds of each process's median step after warm-up.
 * Our two runs use bench/train.ts's worker; this file's worker runs the 1.19.2 session:
 * `node dist/bench/train-ort119.js ort119 <dir>`.
 */
import { readFileSync, writeFileSync, mkdirSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { encodeModel } from '../src/graph/index.js';
import { buildTrainingStep } from '../src/training/index.js';
import { openTraining, int64Tensor, RUNTIME_LEARNING_RATE, skipWithoutTrainingRuntime } from '../tests/training-artifacts/ort-training.js';
import { IGNORE_INDEX, buildOrtLmForward, ortLmParameters, writeOrtLmArtifacts, type OrtLmShape } from './ort119-artifacts.js';
import { median, runWorker } from './step.js';
import type { TrainRun } from './train.js';

export const ORT119_BENCH = {
  model: { vocab: 8000, dim: 256, hidden: 1024 } as OrtLmShape,
  batch: 8, seq: 128, warmup: 1, steps: 5, rounds: 3,
  /** Distinct batches, cycled. */
  batches: 4,
  /** node CPU intra-op threads (the machine's 2 cores); both wasm runtimes run 1 thread. */
  threads: 2,
  lr: RUNTIME_LEARNING_RATE, alpha: 0,
} as const;

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, '..', '..');
const ARTIFACTS = 'artifacts';

/** Batches as a deterministic id stream over the whole vocabulary. */
function benchIds(): BigInt64Array {
  const { model, batch, seq, batches } = ORT119_BENCH;
  return BigInt64Array.from({ length: batches * batch * seq }, (_, i) => BigInt((i * 7919 + 13) % model.vocab));
}

/**
 * Writes the artifacts folder, and for bench/train.ts's worker: forward.onnx, step.onnx (AdamW,
 * causal-LM loss), batches.bin and config.json.
 */
export function prepareOrt119Bench(dir: string): { params: number; stepNodes: number } {
  const c = ORT119_BENCH;
  mkdirSync(dir, { recursive: true });
  writeOrtLmArtifacts(path.join(dir, ARTIFACTS), c.model);
  const forward = buildOrtLmForward(c.model);
  const params = ortLmParameters(c.model);
  const step = buildTrainingStep(forward, { optimizer: 'adamw', params: params.map((p) => p.name) });
  writeFileSync(path.join(dir, 'forward.onnx'), encodeModel(forward));
  writeFileSync(path.join(dir, 'step.onnx'), encodeModel(step.model));
  const ids = benchIds();
  writeFileSync(path.join(dir, 'batches.bin'), Buffer.from(ids.buffer));
  writeFileSync(path.join(dir, 'config.json'), JSON.stringify({ ...c.model, ...c, model: undefined }));
  return { params: params.reduce((n, p) => n + p.values.length, 0), stepNodes: step.model.graph.nodeCount };
}

/** Worker: the 1.19.2 TrainingSession, one AdamW step per batch (train step, optimizer step, reset). */
async function worker(dir: string): Promise<void> {
  const { batch, seq, batches, warmup, steps } = ORT119_BENCH;
  const all = new BigInt64Array(readFileSync(path.join(dir, 'batches.bin')).buffer.slice(0));
  const size = batch * seq;
  const feeds = (k: number) => {
    const ids = all.slice((k % batches) * size, (k % batches + 1) * size);
    // Next-token labels: the artifacts' loss does not shift; the last position of a row is ignored.
    const labels = BigInt64Array.from(ids, (_, i) => ((i + 1) % seq === 0 ? BigInt(IGNORE_INDEX) : ids[i + 1]!));
    return { input_ids: int64Tensor(ids, [batch, seq]), labels: int64Tensor(labels, [batch, seq]) };
  };
  const t = await openTraining(path.join(dir, ARTIFACTS));
  const seconds: number[] = [];
  const losses: number[] = [];
  for (let k = 0; k < warmup + steps; k++) {
    const f = feeds(k);
    const t0 = performance.now();
    const out = await t.step(f);
    if (k >= warmup) seconds.push((performance.now() - t0) / 1000);
    losses.push((out['loss']!.data as Float32Array)[0]!);
  }
  await t.release();
  process.stdout.write(JSON.stringify({ tokensPerSecond: size / median(seconds), firstLoss: losses[0], lastLoss: losses.at(-1), threads: 1 }));
}

type Result = { name: string; value: number; target: string; ok: boolean | null; note: string };
const RUNNERS = { ort119: 'ORT-web 1.19.2 TrainingSession (wasm)', wasm: 'ours, onnxruntime-web 1.30 wasm', cpu: 'ours, onnxruntime-node CPU' } as const;

export function ort119Bench(work: string): Result[] {
  const skip = skipWithoutTrainingRuntime();
  if (skip) {
    console.log(`SKIP  ORT-web 1.19.2 comparison: ${skip}`);
    return [];
  }
  const c = ORT119_BENCH;
  const dir = path.join(work, 'ort119');
  const { params, stepNodes } = prepareOrt119Bench(dir);
  console.log(`\n# training vs ORT-web 1.19.2: embedding + LayerNorm + ReLU MLP (residual) + untied head (vocab ${c.model.vocab}, d ${c.model.dim}, hidden ${c.model.hidden}), `
    + `${(params / 1e6).toFixed(2)}M parameters; our step graph ${stepNodes} nodes; AdamW lr ${c.lr}, batch ${c.batch} x ${c.seq}; ${c.rounds} interleaved rounds of ${c.warmup} + ${c.steps} steps per process; no NEFTune`);
  const runs = new Map<string, TrainRun[]>(Object.keys(RUNNERS).map((k) => [k, []]));
  const ours = path.join(root, 'dist', 'bench', 'train.js');
  for (let r = 0; r < c.rounds; r++) {
    runs.get('ort119')!.push(runWorker<TrainRun>(process.execPath, [path.join(root, 'dist', 'bench', 'train-ort119.js'), 'ort119', dir]));
    runs.get('wasm')!.push(runWorker<TrainRun>(process.execPath, [ours, 'wasm', dir, '0']));
    runs.get('cpu')!.push(runWorker<TrainRun>(process.execPath, [ours, 'cpu', dir, '0']));
  }
  const tps = (k: string) => median(runs.get(k)!.map((x) => x.tokensPerSecond));
  const rss = (k: string) => Math.max(...runs.get(k)!.map((x) => x.rssBytes ?? 0)) / 2 ** 20;
  const first = (k: string) => runs.get(k)![0]!.firstLoss;
  const last = (k: string) => runs.get(k)![0]!.lastLoss;
  for (const [k, label] of Object.entries(RUNNERS)) {
    console.log(`${label.padEnd(38)} ${tps(k).toFixed(0).padStart(7)} tokens/s (${(c.batch * c.seq / tps(k) * 1000).toFixed(0)} ms/step), ${runs.get(k)![0]!.threads} thread(s), peak RSS ${rss(k).toFixed(0)} MB, loss ${first(k).toFixed(6)} -> ${last(k).toFixed(6)}`);
  }
  const worstFirst = Math.max(Math.abs(first('ort119') - first('wasm')), Math.abs(first('ort119') - first('cpu')));
  const worstLast = Math.max(Math.abs(last('ort119') - last('wasm')), Math.abs(last('ort119') - last('cpu')));
  return [
    { name: 'vs ORT 1.19.2: ours wasm / ORT-web 1.19.2 tokens/s', value: tps('wasm') / tps('ort119'), target: 'reported', ok: null, note: `${tps('wasm').toFixed(0)} vs ${tps('ort119').toFixed(0)}; both wasm, 1 thread` },
    { name: 'vs ORT 1.19.2: ours node CPU / ORT-web 1.19.2 tokens/s', value: tps('cpu') / tps('ort119'), target: 'reported', ok: null, note: `${tps('cpu').toFixed(0)} tokens/s, ${c.threads} threads` },
    { name: 'vs ORT 1.19.2: peak RSS ours wasm / ORT-web 1.19.2', value: rss('wasm') / rss('ort119'), target: 'reported', ok: null, note: `${rss('wasm').toFixed(0)} vs ${rss('ort119').toFixed(0)} MB; node CPU ${rss('cpu').toFixed(0)} MB` },
    { name: 'vs ORT 1.19.2: first-step loss, worst |difference|', value: worstFirst, target: '<= 1e-4 (same model)', ok: worstFirst <= 1e-4, note: `ORT 1.19.2 ${first('ort119').toFixed(6)}, wasm ${first('wasm').toFixed(6)}, cpu ${first('cpu').toFixed(6)}` },
    { name: `vs ORT 1.19.2: loss after ${c.warmup + c.steps - 1} AdamW steps, worst |diff|`, value: worstLast, target: '<= 1e-3 (same AdamW)', ok: worstLast <= 1e-3, note: `ORT 1.19.2 ${last('ort119').toFixed(6)}, wasm ${last('wasm').toFixed(6)}, cpu ${last('cpu').toFixed(6)}` },
  ];
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url) && process.argv[2] === 'ort119') {
  await worker(process.argv[3]!);
}
