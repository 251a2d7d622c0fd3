/**
 * Training-step benchmark: the step graph of a small GPT (the builder's, bench size) with a fixed
 * batch, on onnxruntime-node CPU and onnxruntime-web wasm, against PyTorch on CPU for the same model,
 * weights and batch (bench/step_torch.py; Debian's python3-torch). Each runtime runs in its own
 * process (peak RSS from GNU time), rounds interleaved; step time is the median over rounds of each
 * process's median step. Also run as a worker: `node dist/bench/step.js <cpu|wasm> <dir> <steps>`.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { decodeModel, encodeModel } from '../src/graph/index.js';
import { loadRuntime } from '../src/runtime/node.js';
import { buildTrainingStep, type TrainingStepRecord } from '../src/training/index.js';
import { buildTinyGpt } from '../examples/models.js';
import { writeTorchWeights } from './lm-model.js';

export const STEP_BENCH = { vocab: 2560, dim: 64, maxPositions: 128, batch: 8, seq: 64, lr: 1e-3, steps: 20, rounds: 5 } as const;
const PARAMS = ['transformer.wte.weight', 'transformer.wpe.weight', 'ln_f.weight', 'ln_f.bias'];
const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, '..', '..');
export const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const ids = () => BigInt64Array.from({ length: STEP_BENCH.batch * STEP_BENCH.seq }, (_, i) => BigInt((i * 7919 + 13) % STEP_BENCH.vocab));

/** Writes the forward model, the step graph, the weights (bench/torch_common.py's format) and the ids into `dir`. */
export function prepareStepBench(dir: string): { forwardNodes: number; stepNodes: number } {
  const forward = buildTinyGpt({ vocab: STEP_BENCH.vocab, dim: STEP_BENCH.dim, maxPositions: STEP_BENCH.maxPositions });
  const step = buildTrainingStep(forward, { optimizer: 'adamw' });
  writeFileSync(path.join(dir, 'forward.onnx'), encodeModel(forward));
  writeFileSync(path.join(dir, 'step.onnx'), encodeModel(step.model));
  writeTorchWeights(forward, PARAMS, dir);
  const batch = ids();
  writeFileSync(path.join(dir, 'ids.bin'), Buffer.from(batch.buffer));
  return { forwardNodes: forward.graph.nodeCount, stepNodes: step.model.graph.nodeCount };
}

/** Worker: `steps` AdamW steps of the step graph, outputs fed back; prints {median ms, first loss, last loss}. */
async function worker(ep: 'cpu' | 'wasm', dir: string, steps: number): Promise<void> {
  const { ort, sessionOptions } = await loadRuntime(ep);
  const bytes = new Uint8Array(readFileSync(path.join(dir, 'step.onnx')));
  const record = JSON.parse(decodeModel(bytes).metadata.get('onnx_neftune.training_step')!) as TrainingStepRecord;
  const forward = decodeModel(new Uint8Array(readFileSync(path.join(dir, 'forward.onnx'))));
  const session = await ort.InferenceSession.create(bytes, sessionOptions as never);
  const T = ort.Tensor as unknown as new (type: string, data: unknown, dims: readonly number[]) => unknown;
  let feeds: Record<string, unknown> = {
    input_ids: new T('int64', ids(), [STEP_BENCH.batch, STEP_BENCH.seq]),
    [record.learningRate]: new T('float32', Float32Array.from([STEP_BENCH.lr]), []),
  };
  for (const p of record.params) {
    const t = forward.graph.initializer(p.input)!.initializer!;
    feeds[p.input] = new T('float32', (t.toArray() as Float32Array).slice(), t.dims);
  }
  for (const s of record.state) {
    const t = forward.graph.initializer(s.param)!.initializer!;
    feeds[s.input] = new T('float32', new Float32Array(t.elementCount), t.dims);
  }
  const times: number[] = [];
  const losses: number[] = [];
  for (let k = 1; k <= steps + 2; k++) {
    feeds[record.step!] = new T('int64', BigInt64Array.from([BigInt(k)]), []);
    const t0 = performance.now();
    const out = await session.run(feeds as never) as Record<string, { data: Float32Array }>;
    if (k > 2) times.push(performance.now() - t0); // two warm-up steps
    losses.push(out[record.loss]!.data[0]!);
    feeds = { ...feeds };
    for (const p of [...record.params, ...record.state]) feeds[p.input] = out[p.output];
  }
  process.stdout.write(JSON.stringify({ ms: median(times), firstLoss: losses[0], lastLoss: losses.at(-1) }));
}

export interface StepRun { ms: number; firstLoss: number; lastLoss: number; rssBytes: number | null }

export function runWorker<T = Omit<StepRun, 'rssBytes'>>(cmd: string, args: string[]): T & { rssBytes: number | null } {
  const gnuTime = existsSync('/usr/bin/time');
  const r = gnuTime ? spawnSync('/usr/bin/time', ['-f', '%M', cmd, ...args], { encoding: 'utf8' }) : spawnSync(cmd, args, { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed: ${r.stderr}`);
  const kb = gnuTime ? Number(r.stderr.trim().split('\n').at(-1)) : NaN;
  return { ...JSON.parse(r.stdout) as T, rssBytes: Number.isFinite(kb) ? kb * 1024 : null };
}

/** python3 with torch importable, or undefined (the bench says so). */
export function torchPython(): string | undefined {
  for (const exe of ['/usr/bin/python3', 'python3']) {
    if (spawnSync(exe, ['-c', 'import torch, numpy'], { encoding: 'utf8' }).status === 0) return exe;
  }
  return undefined;
}

type Result = { name: string; value: number; target: string; ok: boolean | null; note: string };

export function stepBench(dir: string): Result[] {
  const { vocab, dim, batch, seq, steps, rounds } = STEP_BENCH;
  console.log(`\n# training step: builder GPT (vocab ${vocab}, d ${dim}), AdamW, batch ${batch} x ${seq}; ${rounds} interleaved rounds of ${steps} steps per process`);
  const { forwardNodes, stepNodes } = prepareStepBench(dir);
  const py = torchPython();
  if (!py) console.log('SKIP  PyTorch comparison: python3 cannot import torch (Debian: apt-get install python3-torch)');
  const self = path.join(root, 'dist', 'bench', 'step.js');
  const runs: Record<string, StepRun[]> = { cpu: [], wasm: [], torch: [] };
  for (let r = 0; r < rounds; r++) {
    runs['cpu']!.push(runWorker(process.execPath, [self, 'cpu', dir, String(steps)]));
    runs['wasm']!.push(runWorker(process.execPath, [self, 'wasm', dir, String(steps)]));
    if (py) runs['torch']!.push(runWorker(py, [path.join(root, 'bench', 'step_torch.py'), dir, String(steps), JSON.stringify(STEP_BENCH)]));
  }
  const ms = (k: string) => median(runs[k]!.map((x) => x.ms));
  const rss = (k: string) => Math.max(...runs[k]!.map((x) => x.rssBytes ?? 0)) / 2 ** 20;
  for (const k of ['cpu', 'wasm', 'torch']) {
    const x = runs[k]!;
    if (x.length) console.log(`${k.padEnd(5)} ${ms(k).toFixed(2)} ms per step, peak RSS ${rss(k).toFixed(0)} MB, loss ${x[0]!.firstLoss.toFixed(5)} -> ${x[0]!.lastLoss.toFixed(5)}`);
  }
  const results: Result[] = [
    { name: 'step graph nodes / forward graph nodes', value: stepNodes / forwardNodes, target: 'reported', ok: null, note: `${stepNodes} vs ${forwardNodes}` },
    { name: 'step time: wasm / node CPU', value: ms('wasm') / ms('cpu'), target: 'reported', ok: null, note: `${ms('wasm').toFixed(1)} vs ${ms('cpu').toFixed(1)} ms` },
  ];
  if (py) {
    const first = Math.abs(runs['cpu']![0]!.firstLoss - runs['torch']![0]!.firstLoss);
    results.push(
      // Debian's python3-torch is built on the reference BLAS (BLAS_INFO=generic): a ratio, not a verdict.
      { name: 'step time: node CPU / PyTorch CPU', value: ms('cpu') / ms('torch'), target: 'reported', ok: null, note: `torch ${ms('torch').toFixed(1)} ms` },
      { name: 'step time: wasm / PyTorch CPU', value: ms('wasm') / ms('torch'), target: 'reported', ok: null, note: '' },
      { name: 'peak RSS: node CPU / PyTorch', value: rss('cpu') / rss('torch'), target: 'reported', ok: null, note: `${rss('cpu').toFixed(0)} vs ${rss('torch').toFixed(0)} MB (whole processes)` },
      { name: 'first-step loss |ORT - PyTorch|', value: first, target: '<= 1e-4 (same model)', ok: first <= 1e-4, note: '' },
    );
  }
  return results;
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url) && (process.argv[2] === 'cpu' || process.argv[2] === 'wasm')) {
  await worker(process.argv[2], process.argv[3]!, Number(process.argv[4]));
}
