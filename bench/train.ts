/**
 * Training benchmark: the Trainer (src/training/trainer.ts) running AdamW steps of a causal LM, with
 * NEFTune (alpha 5) and without, on onnxruntime-node CPU and onnxruntime-web wasm in Node, against
 * PyTorch on CPU (bench/train_torch.py) training the same model from the same initial weights on the
 * same batches. Each run is its own process (peak RSS from GNU time); rounds interleave the runtimes;
 * tokens/s is the median over rounds of each process's median step after warm-up.
 * Worker: `node dist/bench/train.js <cpu|wasm> <dir> <0|1 neftune>`.
 */
import { readFileSync, writeFileSync, mkdirSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { decodeModel, encodeModel } from '../src/graph/index.js';
import { applyNeftune } from '../src/passes/index.js';
import { loadRuntime } from '../src/runtime/node.js';
import { buildTrainingStep, TRAINING_STEP_METADATA_KEY, type TrainingStepRecord } from '../src/training/index.js';
import { parseTokenJsonl } from '../src/training/data.js';
import { Trainer, type TrainerOrt } from '../src/training/trainer.js';
import type { TokenBatch } from '../src/training/batch.js';
import { buildBenchLm, lmParams, writeTorchWeights, type LmShape } from './lm-model.js';
import { median, runWorker, torchPython } from './step.js';

export interface TrainBenchModel extends LmShape { name: string; batch: number; seq: number; steps: number; rounds: number }
export const TRAIN_BENCH = {
  models: [
    { name: 'tiny (builder GPT, vocab 64, d 16)', vocab: 64, dim: 16, layers: 0, heads: 1, maxPositions: 32, batch: 8, seq: 32, steps: 100, rounds: 5 },
    { name: 'small GPT (vocab 8000, d 256, 4 layers, 4 heads)', vocab: 8000, dim: 256, layers: 4, heads: 4, maxPositions: 128, batch: 8, seq: 128, steps: 2, rounds: 2 },
  ] as TrainBenchModel[],
  // PyTorch on Debian's reference BLAS takes about 16 s per step of the small GPT: few steps and rounds keep the section to minutes.
  lr: 1e-3, alpha: 5, warmup: 1,
  /** ORT CPU intra-op threads and torch.set_num_threads: the machine's 2 cores. wasm runs 1 thread (loadRuntime). */
  threads: 2,
  /** Distinct batches, cycled. */
  batches: 8,
} as const;

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, '..', '..');
type Config = TrainBenchModel & { lr: number; alpha: number; warmup: number; threads: number; batches: number };

/**
 * The bundled token data (examples/data/tiny-tokens.jsonl) as one stream cut into full rows:
 * `count` batches of batch x seq ids, no padding, so every runtime sees exactly the same targets.
 */
function benchBatches(c: Config): BigInt64Array {
  const rows = parseTokenJsonl(readFileSync(path.join(root, 'examples', 'data', 'tiny-tokens.jsonl')), { vocabSize: c.vocab }).rows;
  const stream = rows.flatMap((r) => [...r.inputIds]);
  return BigInt64Array.from({ length: c.batches * c.batch * c.seq }, (_, i) => BigInt(stream[i % stream.length]!));
}

/** Writes the model, both step graphs, the weights, the batches and config.json into `dir`. */
export function prepareTrainBench(dir: string, model: TrainBenchModel): { params: number; stepNodes: number } {
  mkdirSync(dir, { recursive: true });
  const { lr, alpha, warmup, threads, batches } = TRAIN_BENCH;
  const config: Config = { ...model, lr, alpha, warmup, threads, batches };
  const forward = buildBenchLm(model);
  const params = lmParams(forward);
  const patched = forward.clone();
  applyNeftune(patched, { alphaInput: true });
  const plain = buildTrainingStep(forward, { optimizer: 'adamw', params });
  writeFileSync(path.join(dir, 'forward.onnx'), encodeModel(forward));
  writeFileSync(path.join(dir, 'step.onnx'), encodeModel(plain.model));
  writeFileSync(path.join(dir, 'step-neftune.onnx'), encodeModel(buildTrainingStep(patched, { optimizer: 'adamw', params }).model));
  writeTorchWeights(forward, params, dir);
  const ids = benchBatches(config);
  writeFileSync(path.join(dir, 'batches.bin'), Buffer.from(ids.buffer));
  writeFileSync(path.join(dir, 'config.json'), JSON.stringify(config));
  const count = params.reduce((n, p) => n + forward.graph.initializer(p)!.initializer!.elementCount, 0);
  return { params: count, stepNodes: plain.model.graph.nodeCount };
}

export interface TrainRun { tokensPerSecond: number; firstLoss: number; lastLoss: number; threads: number; rssBytes: number | null }

/** Worker: warm-up + steps of the Trainer, batches cycled; prints a TrainRun without rssBytes. */
async function worker(ep: 'cpu' | 'wasm', dir: string, neftune: boolean): Promise<void> {
  const c = JSON.parse(readFileSync(path.join(dir, 'config.json'), 'utf8')) as Config;
  const { ort, sessionOptions } = await loadRuntime(ep);
  const stepModel = decodeModel(new Uint8Array(readFileSync(path.join(dir, neftune ? 'step-neftune.onnx' : 'step.onnx'))));
  const record = JSON.parse(stepModel.metadata.get(TRAINING_STEP_METADATA_KEY)!) as TrainingStepRecord;
  const initial = decodeModel(new Uint8Array(readFileSync(path.join(dir, 'forward.onnx'))));
  const threads = ep === 'cpu' ? c.threads : 1;
  const trainer = await Trainer.create({
    ort: ort as unknown as TrainerOrt, step: { model: stepModel, record }, initial,
    schedule: { kind: 'constant', lr: c.lr }, ...(neftune ? { alpha: { kind: 'constant', alpha: c.alpha } } : {}),
    sessionOptions: { ...sessionOptions, ...(ep === 'cpu' ? { intraOpNumThreads: threads, interOpNumThreads: 1 } : {}) },
  });
  const all = new BigInt64Array(readFileSync(path.join(dir, 'batches.bin')).buffer.slice(0));
  const size = c.batch * c.seq;
  const batch = (k: number): TokenBatch => {
    const inputIds = all.slice((k % c.batches) * size, (k % c.batches + 1) * size);
    return { batch: c.batch, length: c.seq, inputIds, attentionMask: new BigInt64Array(size).fill(1n), labels: inputIds, tokens: size };
  };
  const seconds: number[] = [];
  const losses: number[] = [];
  for (let k = 0; k < c.warmup + c.steps; k++) {
    const b = batch(k);
    const t0 = performance.now();
    const e = await trainer.trainStep(b);
    if (k >= c.warmup) seconds.push((performance.now() - t0) / 1000);
    losses.push(e.loss);
  }
  await trainer.release();
  process.stdout.write(JSON.stringify({ tokensPerSecond: size / median(seconds), firstLoss: losses[0], lastLoss: losses.at(-1), threads }));
}

type Result = { name: string; value: number; target: string; ok: boolean | null; note: string };
const RUNNERS = ['cpu', 'wasm', 'torch'] as const;

export function trainBench(work: string): Result[] {
  const py = torchPython();
  if (!py) console.log('SKIP  PyTorch comparison: python3 cannot import torch (Debian: apt-get install python3-torch)');
  const self = path.join(root, 'dist', 'bench', 'train.js');
  const results: Result[] = [];
  for (const [i, model] of TRAIN_BENCH.models.entries()) {
    const dir = path.join(work, `train-${i}`);
    const { params, stepNodes } = prepareTrainBench(dir, model);
    console.log(`\n# training: ${model.name}, ${(params / 1e6).toFixed(2)}M parameters, step graph ${stepNodes} nodes; AdamW lr ${TRAIN_BENCH.lr}, batch ${model.batch} x ${model.seq}; `
      + `${model.rounds} interleaved rounds of ${TRAIN_BENCH.warmup} + ${model.steps} steps per process; NEFTune off / alpha ${TRAIN_BENCH.alpha}`);
    const runs = new Map<string, TrainRun[]>();
    const add = (key: string, run: TrainRun) => runs.set(key, [...(runs.get(key) ?? []), run]);
    for (let r = 0; r < model.rounds; r++) {
      for (const neftune of [false, true]) {
        const flag = neftune ? '1' : '0';
        add(`cpu${flag}`, runWorker<TrainRun>(process.execPath, [self, 'cpu', dir, flag]));
        add(`wasm${flag}`, runWorker<TrainRun>(process.execPath, [self, 'wasm', dir, flag]));
        if (py) add(`torch${flag}`, runWorker<TrainRun>(py, [path.join(root, 'bench', 'train_torch.py'), dir, flag]));
      }
    }
    const tps = (k: string) => median(runs.get(k)!.map((x) => x.tokensPerSecond));
    const rss = (k: string) => Math.max(...runs.get(k)!.map((x) => x.rssBytes ?? 0)) / 2 ** 20;
    const short = model.layers ? 'small' : 'tiny';
    for (const flag of ['0', '1']) {
      const label = flag === '1' ? `NEFTune ${TRAIN_BENCH.alpha}` : 'no NEFTune';
      for (const who of RUNNERS) {
        const x = runs.get(`${who}${flag}`);
        if (!x) continue;
        console.log(`${label.padEnd(10)} ${who.padEnd(5)} ${tps(`${who}${flag}`).toFixed(0).padStart(7)} tokens/s, ${x[0]!.threads} thread(s), peak RSS ${rss(`${who}${flag}`).toFixed(0)} MB, loss ${x[0]!.firstLoss.toFixed(5)} -> ${x[0]!.lastLoss.toFixed(5)}`);
      }
      results.push({ name: `${short} ${label}: wasm / node CPU tokens/s`, value: tps(`wasm${flag}`) / tps(`cpu${flag}`), target: 'reported', ok: null, note: `${tps(`wasm${flag}`).toFixed(0)} vs ${tps(`cpu${flag}`).toFixed(0)}` });
      if (!py) continue;
      results.push(
        { name: `${short} ${label}: node CPU / PyTorch tokens/s`, value: tps(`cpu${flag}`) / tps(`torch${flag}`), target: 'reported', ok: null, note: `torch ${tps(`torch${flag}`).toFixed(0)} tokens/s` },
        { name: `${short} ${label}: wasm / PyTorch tokens/s`, value: tps(`wasm${flag}`) / tps(`torch${flag}`), target: 'reported', ok: null, note: 'wasm 1 thread, torch 2' },
        { name: `${short} ${label}: peak RSS node CPU / PyTorch`, value: rss(`cpu${flag}`) / rss(`torch${flag}`), target: 'reported', ok: null, note: `${rss(`cpu${flag}`).toFixed(0)} vs ${rss(`torch${flag}`).toFixed(0)} MB; wasm ${rss(`wasm${flag}`).toFixed(0)} MB` },
      );
    }
    // Without noise the three compute the same first loss from the same weights and batch.
    const first = (who: string) => runs.get(`${who}0`)?.[0]?.firstLoss ?? NaN;
    const worst = Math.max(Math.abs(first('cpu') - first('wasm')), py ? Math.abs(first('cpu') - first('torch')) : 0);
    results.push({ name: `${short}: first-step loss, worst |difference|`, value: worst, target: '<= 1e-4 (same model)', ok: worst <= 1e-4, note: `cpu ${first('cpu').toFixed(6)}, wasm ${first('wasm').toFixed(6)}${py ? `, torch ${first('torch').toFixed(6)}` : ''}` });
  }
  return results;
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url) && (process.argv[2] === 'cpu' || process.argv[2] === 'wasm')) {
  await worker(process.argv[2], process.argv[3]!, process.argv[4] === '1');
}
