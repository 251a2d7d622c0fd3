import ort from 'onnxruntime-node';
import { DataType, ModelBuilder, Tensor, encodeModel, type Model, type Value } from '../../src/graph/index.js';
import type { TrainingStep } from '../../src/training/step.js';

export { ort };

export async function session(model: Model): Promise<ort.InferenceSession> {
  return ort.InferenceSession.create(encodeModel(model));
}

export function ortTensor(t: Tensor): ort.Tensor {
  const data = t.toArray();
  switch (t.dataType) {
    case DataType.FLOAT: return new ort.Tensor('float32', data as Float32Array, t.dims);
    case DataType.DOUBLE: return new ort.Tensor('float64', data as Float64Array, t.dims);
    case DataType.INT64: return new ort.Tensor('int64', data as BigInt64Array, t.dims);
    default: throw new Error(`test helper: no ort tensor for type ${t.dataType}`);
  }
}

/** Feeds for a step: each parameter's initial value from the source model, zero state, lr, step. */
export function stepFeeds(source: Model, step: TrainingStep, lr: number, extra: Record<string, ort.Tensor> = {}): Record<string, ort.Tensor> {
  const feeds: Record<string, ort.Tensor> = { ...extra };
  const { record } = step;
  for (const p of record.params) feeds[p.input] = ortTensor(source.graph.initializer(p.input)!.initializer!);
  for (const s of record.state) {
    const t = feeds[s.param]!;
    feeds[s.input] = new ort.Tensor(t.type as 'float32', new (t.data.constructor as Float32ArrayConstructor)((t.data as Float32Array).length), t.dims);
  }
  feeds[record.learningRate] = new ort.Tensor('float32', Float32Array.from([lr]), []);
  if (record.step) feeds[record.step] = new ort.Tensor('int64', BigInt64Array.from([1n]), []);
  return feeds;
}

export const scalarOf = (t: ort.Tensor): number => Number((t.data as Float64Array)[0]);

/** Deterministic values in [-1, 1). */
export function values(count: number, seed: number): number[] {
  let x = seed >>> 0 || 1;
  return Array.from({ length: count }, () => {
    x ^= x << 13; x >>>= 0; x ^= x >>> 17; x ^= x << 5; x >>>= 0;
    return (x / 4294967296) * 2 - 1;
  });
}

/**
 * Compares each parameter's gradient output with central finite differences of the step graph's
 * loss output on `samples` coordinates per parameter. Returns the worst |fd - grad| / (1 + |grad|).
 */
export async function finiteDifferenceError(source: Model, step: TrainingStep, options: { h?: number; samples?: number; extra?: Record<string, ort.Tensor> } = {}): Promise<{ worst: number; where: string; checked: number }> {
  const h = options.h ?? 1e-6;
  const s = await session(step.model);
  const feeds = stepFeeds(source, step, 0, options.extra);
  const base = await s.run(feeds);
  let worst = 0, where = '', checked = 0;
  for (const p of step.record.params) {
    const grad = base[p.grad!]!.data as Float64Array;
    const original = feeds[p.input]!;
    const n = (original.data as Float64Array).length;
    // Small parameters: every coordinate (a repeated-id row must not be missed); large ones: a sample.
    const picks = n <= 64 ? Array.from({ length: n }, (_, i) => i) : [...new Set(values(options.samples ?? 6, n * 7 + 3).map((v) => Math.floor(((v + 1) / 2) * n)))];
    for (const i of picks) {
      const at = async (delta: number) => {
        const data = (original.data as Float64Array).slice();
        data[i] = data[i]! + delta;
        const out = await s.run({ ...feeds, [p.input]: new ort.Tensor(original.type as 'float64', data, original.dims) }, [step.record.loss]);
        return scalarOf(out[step.record.loss]!);
      };
      const fd = ((await at(h)) - (await at(-h))) / (2 * h);
      const err = Math.abs(fd - Number(grad[i])) / (1 + Math.abs(Number(grad[i])));
      checked++;
      if (err > worst || Number.isNaN(err)) { worst = Number.isNaN(err) ? Infinity : err; where = `${p.input}[${i}]: fd ${fd}, grad ${grad[i]}`; }
    }
  }
  await s.release();
  return { worst, where, checked };
}

/** A float parameter (initializer) with deterministic values, `value * scale + offset`. */
export type Param = (name: string, dims: number[], options?: { offset?: number; scale?: number }) => Value;

/**
 * A one-op test model: parameters made by `p`, loss = ReduceSum(y * y) over what `build` returns.
 * float64 by default; float32 where ORT has no float64 kernel (Erf, Gelu) or for wasm.
 */
export function ruleModel(build: (b: ModelBuilder, p: Param) => Value, options: { opset?: number; elem?: 'double' | 'float' } = {}): Model {
  const opset = options.opset ?? 17, elem = options.elem ?? 'double';
  // Opset 21+ needs IR version 10.
  const b = new ModelBuilder({ opset, irVersion: opset >= 21 ? 10 : 8 });
  let seed = 1;
  const p: Param = (name, dims, o = {}) => {
    const n = dims.reduce((x, y) => x * y, 1);
    const data = values(n, seed++ * 101).map((v) => v * (o.scale ?? 1) + (o.offset ?? 0));
    return b.initializer(name, Tensor.fromArray(elem, dims, elem === 'double' ? Float64Array.from(data) : Float32Array.from(data)));
  };
  const y = build(b, p);
  const loss = b.op('ReduceSum', [b.op('Mul', [y, y])], { keepdims: 0 }, { outputs: ['loss'] });
  b.output(loss, elem, []);
  return b.build();
}

/** An int64 constant (ids, axes, sizes). */
export const ints = (b: ModelBuilder, name: string, v: number[], dims = [v.length]): Value => b.constant(name, 'int64', dims, BigInt64Array.from(v.map(BigInt)));
