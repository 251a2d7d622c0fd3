/** ONNX Runtime cost of the inserted nodes on a BERT-base-shaped forward. */
import ort from 'onnxruntime-node';
import { ModelBuilder, Tensor, decodeModel, encodeModel } from '../src/graph/index.js';
import { applyNeftune } from '../src/passes/index.js';
import { randomFloats } from '../examples/models.js';
import { buildBertBase } from './models.js';

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

async function timeRuns(sessions: ort.InferenceSession[], feeds: Record<string, ort.Tensor>, runs: number): Promise<number[][]> {
  const times = sessions.map(() => [] as number[]);
  for (const s of sessions) await s.run(feeds); // warm up
  for (let r = 0; r < runs; r++) {
    for (const [i, s] of sessions.entries()) { // interleaved, so drift hits both alike
      const t = performance.now();
      await s.run(feeds);
      times[i]!.push(performance.now() - t);
    }
  }
  return times;
}

export async function runtimeBench(): Promise<Array<{ name: string; value: number; target: string; ok: boolean | null; note: string }>> {
  const [batch, seq, dim] = [8, 128, 768];
  console.log('\n# ONNX Runtime CPU: BERT-base-shaped forward (12 layers, d 768), batch 8, seq 128');
  const base = buildBertBase();
  const bytes = encodeModel(base);
  const patchedModel = decodeModel(bytes);
  applyNeftune(patchedModel);
  const opts = { intraOpNumThreads: 2, logSeverityLevel: 3 } as const;
  const [plain, patched] = [await ort.InferenceSession.create(bytes, opts), await ort.InferenceSession.create(encodeModel(patchedModel), opts)];
  const ids = new ort.Tensor('int64', BigInt64Array.from({ length: batch * seq }, (_, i) => BigInt((i * 7919) % 30522)), [batch, seq]);
  const [t0, t1] = await timeRuns([plain, patched], { input_ids: ids }, 12);
  // The fastest of interleaved runs is the least disturbed by other load on a shared machine.
  const fastest = (xs: number[]) => Math.min(...xs);
  const ratio = fastest(t1!) / fastest(t0!);
  console.log(`per run (fastest of 12 / median): unpatched ${fastest(t0!).toFixed(0)} / ${median(t0!).toFixed(0)} ms, patched ${fastest(t1!).toFixed(0)} / ${median(t1!).toFixed(0)} ms`);

  // The noise nodes on their own, next to one memory pass over the embedding tensor (the floor).
  const lookupOnly = () => {
    const b = new ModelBuilder({ opset: 17, irVersion: 8 });
    const t = b.initializer('wte', Tensor.fromArray('float', [30522, dim], randomFloats(30522 * dim, 5, 0.02)));
    b.output(b.op('Gather', [t, b.input('input_ids', 'int64', ['batch', 'sequence'])], { axis: 0 }, { name: 'lookup' }), 'float', ['batch', 'sequence', dim]);
    return b.build();
  };
  const clean = lookupOnly();
  const noisy = lookupOnly();
  applyNeftune(noisy);
  const floorModel = (() => {
    const b = new ModelBuilder({ opset: 17, irVersion: 8 });
    const x = b.input('x', 'float', [batch, seq, dim]);
    b.output(b.op('Add', [x, x]), 'float', [batch, seq, dim]);
    return b.build();
  })();
  const [s0, s1, sf] = await Promise.all([clean, noisy, floorModel].map((m) => ort.InferenceSession.create(encodeModel(m), opts)));
  const [l0, l1] = await timeRuns([s0!, s1!], { input_ids: ids }, 15);
  const [lf] = await timeRuns([sf!], { x: new ort.Tensor('float32', new Float32Array(batch * seq * dim), [batch, seq, dim]) }, 15);
  const noiseCost = median(l1!) - median(l0!);
  console.log(`noise nodes: ${noiseCost.toFixed(1)} ms per run; one memory pass (Add x+x on ${batch}x${seq}x${dim} float32): ${median(lf!).toFixed(1)} ms`);
  return [
    { name: 'BERT-base forward: patched / unpatched (fastest run)', value: ratio, target: '<= 1.03', ok: ratio <= 1.03, note: `${fastest(t0!).toFixed(0)} vs ${fastest(t1!).toFixed(0)} ms; medians ${(median(t1!) / median(t0!)).toFixed(3)}` },
    { name: 'noise nodes cost / one memory pass over E', value: noiseCost / median(lf!), target: 'reported', ok: null, note: `${noiseCost.toFixed(1)} ms vs ${median(lf!).toFixed(1)} ms` },
  ];
}
