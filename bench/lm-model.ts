/**
 * The benchmarks' causal LMs and how their weights reach PyTorch. `layers: 0` is the builder GPT
 * (examples/models.ts: embeddings, LayerNorm, tied head); more layers add GPT-2 pre-LN blocks
 * (causal multi-head attention, Erf GELU MLP). bench/torch_common.py builds the same model in torch
 * from weights.json + weights.bin, written here from the ONNX initializers.
 */
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { ModelBuilder, Tensor, attr, type Model, type Value } from '../src/graph/index.js';
import { buildTinyGpt, randomFloats } from '../examples/models.js';

export interface LmShape { vocab: number; dim: number; layers: number; heads: number; maxPositions: number }

/** Additive causal mask value: exp() of it underflows to exactly 0 in float32, no -inf arithmetic. */
export const MASKED = -1e9;

export function buildBenchLm(shape: LmShape): Model {
  const { vocab, dim, layers, heads, maxPositions } = shape;
  if (layers === 0) return buildTinyGpt({ vocab, dim, maxPositions });
  const b = new ModelBuilder({ opset: 17, irVersion: 8, graphName: 'bench_gpt' });
  let seed = 100;
  const weight = (name: string, dims: number[], scale = 0.02) =>
    b.initializer(name, Tensor.fromArray('float', dims, randomFloats(dims.reduce((a, c) => a * c, 1), seed++, scale)));
  const filled = (name: string, n: number, value: number) => b.initializer(name, Tensor.fromArray('float', [n], new Float32Array(n).fill(value)));
  const ln = (x: Value, name: string) => b.op('LayerNormalization', [x, filled(`${name}.weight`, dim, 1), filled(`${name}.bias`, dim, 0)], { axis: -1, epsilon: attr.float(1e-5) });
  const linear = (x: Value, name: string, din: number, dout: number) => b.op('Add', [b.op('MatMul', [x, weight(`${name}.weight`, [din, dout])]), filled(`${name}.bias`, dout, 0)]);

  const ids = b.input('input_ids', 'int64', ['batch', 'sequence']);
  const wte = weight('transformer.wte.weight', [vocab, dim]);
  const wpe = weight('transformer.wpe.weight', [maxPositions, dim]);
  const seq = b.op('Gather', [b.op('Shape', [ids]), b.constant('one', 'int64', [], [1])], { axis: 0 });
  const positions = b.op('Range', [b.constant('zero', 'int64', [], [0]), seq, b.constant('step_one', 'int64', [], [1])]);
  const tok = b.op('Gather', [wte, ids], { axis: 0 }, { name: 'wte_lookup', outputs: ['inputs_embeds'] });
  let h = b.op('Add', [tok, b.op('Gather', [wpe, positions], { axis: 0 }, { name: 'wpe_lookup', outputs: ['position_embeds'] })]);

  const maskValues = new Float32Array(maxPositions * maxPositions);
  for (let i = 0; i < maxPositions; i++) for (let j = i + 1; j < maxPositions; j++) maskValues[i * maxPositions + j] = MASKED;
  const seq1 = b.op('Unsqueeze', [seq, b.constant('axes0', 'int64', [1], [0])]);
  const mask = b.op('Slice', [b.constant('causal_mask', 'float', [maxPositions, maxPositions], maskValues), b.constant('mask_starts', 'int64', [2], [0, 0]), b.op('Concat', [seq1, seq1], { axis: 0 }), b.constant('mask_axes', 'int64', [2], [0, 1])]);
  const headShape = b.constant('head_shape', 'int64', [4], [0, 0, heads, dim / heads]);
  const mergeShape = b.constant('merge_shape', 'int64', [3], [0, 0, dim]);
  const scale = b.constant('attn_scale', 'float', [], [1 / Math.sqrt(dim / heads)]);
  for (let l = 0; l < layers; l++) {
    const p = `h.${l}`;
    const x = ln(h, `${p}.ln_1`);
    const heads4 = (v: Value, perm: number[]) => b.op('Transpose', [b.op('Reshape', [v, headShape])], { perm });
    const q = heads4(linear(x, `${p}.attn.q`, dim, dim), [0, 2, 1, 3]);
    const k = heads4(linear(x, `${p}.attn.k`, dim, dim), [0, 2, 3, 1]);
    const v = heads4(linear(x, `${p}.attn.v`, dim, dim), [0, 2, 1, 3]);
    const probs = b.op('Softmax', [b.op('Add', [b.op('Mul', [b.op('MatMul', [q, k]), scale]), mask])], { axis: -1 });
    const ctx = b.op('Reshape', [b.op('Transpose', [b.op('MatMul', [probs, v])], { perm: [0, 2, 1, 3] }), mergeShape]);
    h = b.op('Add', [h, linear(ctx, `${p}.attn.proj`, dim, dim)]);
    const m = linear(ln(h, `${p}.ln_2`), `${p}.mlp.fc`, dim, 4 * dim);
    const gelu = b.op('Mul', [b.op('Mul', [m, b.constant(`${p}.half`, 'float', [], [0.5])]),
      b.op('Add', [b.op('Erf', [b.op('Mul', [m, b.constant(`${p}.rsqrt2`, 'float', [], [Math.SQRT1_2])])]), b.constant(`${p}.one`, 'float', [], [1])])]);
    h = b.op('Add', [h, linear(gelu, `${p}.mlp.proj`, 4 * dim, dim)]);
  }
  const normed = ln(h, 'ln_f');
  b.output(b.op('MatMul', [normed, b.op('Transpose', [wte], { perm: [1, 0] })], {}, { outputs: ['logits'] }), 'float', ['batch', 'sequence', vocab]);
  return b.build();
}

/** The trainable parameters: every table, weight and bias (not the mask and scalar constants). */
export function lmParams(model: Model): string[] {
  return model.graph.initializers.filter((v) => /\.(weight|bias)$/.test(v.name)).map((v) => v.name);
}

/**
 * Writes the named float32 initializers of `model` for bench/torch_common.py: weights.json lists
 * {name, dims} in order, weights.bin holds their values back to back.
 */
export function writeTorchWeights(model: Model, names: readonly string[], dir: string): void {
  const tensors = names.map((n) => {
    const t = model.graph.initializer(n)?.initializer;
    if (!t) throw new Error(`${n} is not an initializer of the benchmark model`);
    return { name: n, dims: t.dims.map(Number), values: t.toArray() as Float32Array };
  });
  writeFileSync(path.join(dir, 'weights.json'), JSON.stringify(tensors.map(({ name, dims }) => ({ name, dims }))));
  writeFileSync(path.join(dir, 'weights.bin'), Buffer.concat(tensors.map(({ values: w }) => Buffer.from(w.buffer, w.byteOffset, w.byteLength))));
}
