/**
 * Builder-made models shaped like torch.onnx / optimum / onnxruntime-genai exports of BERT, T5 and
 * Gemma/Llama decoders: one layer each, no value_info on intermediate values, shape arithmetic
 * spelled with Shape/Gather/Unsqueeze/Concat as exporters write it, float32 or float64 weights.
 */
import { DataType, ModelBuilder, Tensor, attr, type Model, type Value } from '../../src/graph/index.js';
import { randomFloats } from '../../examples/models.js';
import { buildTrainingStep, type TrainingStepOptions } from '../../src/training/step.js';
import { ort, scalarOf, session, stepFeeds } from './helpers.js';

export type Precision = 'float' | 'double';
export interface FactoryOptions { dtype?: Precision; opset?: number }

const INT64_MAX = 9223372036854775807n;

/** The builder plus the exporter idioms these models share. */
class Net {
  readonly b: ModelBuilder;
  private seed = 1000;
  constructor(readonly dtype: Precision, readonly opset: number, graphName: string) {
    this.b = new ModelBuilder({ opset, irVersion: 8, graphName });
  }
  get elem(): DataType { return this.dtype === 'float' ? DataType.FLOAT : DataType.DOUBLE; }
  get lowest(): number { return this.dtype === 'float' ? -3.4028234663852886e38 : -Number.MAX_VALUE; }

  param(name: string, dims: number[], scale = 0.3, offset = 0): Value {
    const n = dims.reduce((p, q) => p * q, 1);
    const data = Array.from(randomFloats(n, this.seed++, scale), (x) => x + offset);
    return this.b.initializer(name, Tensor.fromArray(this.dtype, dims, data));
  }
  table(name: string, dims: number[], data: number[]): Value { return this.b.initializer(name, Tensor.fromArray(this.dtype, dims, data)); }
  /** Scalars as Constant nodes, as torch.onnx writes Python numbers (a float initializer would count as a weight). */
  scalar(value: number): Value { return this.b.op('Constant', [], { value: attr.tensor(Tensor.fromArray(this.dtype, [], [value])) }); }
  ints(values: readonly (number | bigint)[]): Value { return this.b.constant(this.fresh('ints'), 'int64', [values.length], values.map(BigInt) as unknown as number[]); }
  int(value: number): Value { return this.b.constant(this.fresh('int'), 'int64', [], [value]); }
  private count = 0;
  private fresh(base: string): string { return `${base}_${this.count++}`; }

  op(type: string, inputs: Value[], attrs: Record<string, number | number[]> = {}, name?: string): Value {
    return this.b.op(type, inputs, attrs, name ? { outputs: [name] } : {});
  }
  unsqueeze(x: Value, axes: number[]): Value { return this.op('Unsqueeze', [x, this.ints(axes)]); }
  /** `Unsqueeze(Gather(Shape(x), i), 0)`: one dim of x as a 1-element int64 tensor, as torch.onnx writes it. */
  dim(x: Value, i: number): Value { return this.unsqueeze(this.op('Gather', [this.op('Shape', [x]), this.int(i)], { axis: 0 }), [0]); }
  scalarDim(x: Value, i: number): Value { return this.op('Gather', [this.op('Shape', [x]), this.int(i)], { axis: 0 }); }
  reduceMean(x: Value): Value {
    return this.opset >= 18 ? this.op('ReduceMean', [x, this.ints([-1])], { keepdims: 1 }) : this.op('ReduceMean', [x], { axes: [-1], keepdims: 1 });
  }
  linear(x: Value, name: string, inDim: number, outDim: number, bias = true): Value {
    const y = this.op('MatMul', [x, this.param(`${name}.weight`, [inDim, outDim])]);
    return bias ? this.op('Add', [y, this.param(`${name}.bias`, [outDim], 0.1)]) : y;
  }
  /** [B, L, heads*hd] -> [B, heads, L, hd] */
  splitHeads(x: Value, heads: number, hd: number): Value {
    const shape = this.op('Concat', [this.dim(x, 0), this.dim(x, 1), this.ints([heads]), this.ints([hd])], { axis: 0 });
    return this.op('Transpose', [this.op('Reshape', [x, shape])], { perm: [0, 2, 1, 3] });
  }
  /** [B, heads, L, hd] -> [B, L, width] */
  mergeHeads(x: Value, width: number): Value {
    const shape = this.op('Concat', [this.dim(x, 0), this.dim(x, 2), this.ints([width])], { axis: 0 });
    return this.op('Reshape', [this.op('Transpose', [x], { perm: [0, 2, 1, 3] }), shape]);
  }
  /** softmax(q k^T * scale + bias) v, with the bias added (or a Where mask applied) before the softmax. */
  attend(q: Value, k: Value, v: Value, scale: number | undefined, mask: (scores: Value) => Value): Value {
    let scores = this.op('MatMul', [q, this.op('Transpose', [k], { perm: [0, 1, 3, 2] })]);
    if (scale !== undefined) scores = this.op('Div', [scores, this.scalar(1 / scale)]);
    return this.op('MatMul', [this.op('Softmax', [mask(scores)], { axis: -1 }), v]);
  }
  /** `(1 - mask[:, None, None, :]) * finfo.min`, the additive mask of HF encoders. */
  additiveMask(mask: Value): Value {
    const m = this.op('Cast', [this.unsqueeze(mask, [1, 2])], { to: this.elem });
    return this.op('Mul', [this.op('Sub', [this.scalar(1), m]), this.scalar(this.lowest)]);
  }
  /** Hugging Face cross-entropy against `labels` (-100 ignored), mean over the counted tokens. */
  crossEntropy(logits: Value, labels: Value, vocab: number): Value {
    const logp = this.op('LogSoftmax', [logits], { axis: -1 });
    const valid = this.op('Not', [this.op('Equal', [labels, this.int(-100)])]);
    const safe = this.op('Where', [valid, labels, this.int(0)]);
    const oneHot = this.op('Cast', [this.op('OneHot', [safe, this.int(vocab), this.b.constant(this.fresh('onehot_values'), 'float', [2], [0, 1])], { axis: -1 })], { to: this.elem });
    const picked = this.op('ReduceSum', [this.op('Mul', [logp, oneHot]), this.ints([-1])], { keepdims: 0 });
    const weight = this.op('Cast', [valid], { to: this.elem });
    const total = this.op('ReduceSum', [this.op('Mul', [picked, weight])], { keepdims: 0 });
    const count = this.op('Max', [this.op('ReduceSum', [weight], { keepdims: 0 }), this.scalar(1)]);
    return this.op('Neg', [this.op('Div', [total, count])], {}, 'loss');
  }
  build(): Model { return this.b.build(); }
}

// ---------------------------------------------------------------- BERT

export const BERT = { vocab: 32, dim: 16, heads: 2, ff: 32, positions: 16 } as const;

/**
 * BERT encoder with an MLM head tied to the word embeddings and an appended MLM loss (`labels`,
 * -100 ignored). LayerNormalization at opset 17, torch's decomposed LayerNorm pattern below it.
 */
export function buildBert(options: FactoryOptions = {}): Model {
  const { dtype = 'double', opset = 17 } = options;
  const { vocab, dim, heads, ff, positions } = BERT;
  const n = new Net(dtype, opset, 'bert');
  const ids = n.b.input('input_ids', 'int64', ['batch', 'sequence']);
  const types = n.b.input('token_type_ids', 'int64', ['batch', 'sequence']);
  const mask = n.b.input('attention_mask', 'int64', ['batch', 'sequence']);
  const labels = n.b.input('labels', 'int64', ['batch', 'sequence']);
  const word = n.param('bert.embeddings.word_embeddings.weight', [vocab, dim], 0.5);
  const posTable = n.param('bert.embeddings.position_embeddings.weight', [positions, dim], 0.5);
  const typeTable = n.param('bert.embeddings.token_type_embeddings.weight', [2, dim], 0.5);
  // optimum: position_ids is a registered buffer sliced to the sequence length.
  const posBuffer = n.b.constant('bert.embeddings.position_ids', 'int64', [1, positions], Array.from({ length: positions }, (_, i) => i));
  const posIds = n.op('Slice', [posBuffer, n.ints([0]), n.dim(ids, 1), n.ints([1])]);
  const words = n.b.op('Gather', [word, ids], { axis: 0 }, { name: 'word_lookup', outputs: ['inputs_embeds'] });
  const emb = n.op('Add', [n.op('Add', [words, n.op('Gather', [typeTable, types], { axis: 0 })]), n.op('Gather', [posTable, posIds], { axis: 0 })]);

  const layerNorm = (x: Value, name: string): Value => {
    const w = n.param(`${name}.weight`, [dim], 0.1, 1), bias = n.param(`${name}.bias`, [dim], 0.1);
    if (opset >= 17) return n.b.op('LayerNormalization', [x, w, bias], { axis: -1, epsilon: 1e-12 });
    const xc = n.op('Sub', [x, n.reduceMean(x)]);
    const std = n.op('Sqrt', [n.op('Add', [n.reduceMean(n.op('Pow', [xc, n.scalar(2)])), n.scalar(1e-12)])]);
    return n.op('Add', [n.op('Mul', [n.op('Div', [xc, std]), w]), bias]);
  };
  // ONNX Runtime has no float64 Erf kernel: the float64 variant computes erf in float32, between Casts.
  const erf = (x: Value): Value => (dtype === 'float' ? n.op('Erf', [x]) : n.op('Cast', [n.op('Erf', [n.op('Cast', [x], { to: DataType.FLOAT })])], { to: DataType.DOUBLE }));
  const gelu = (x: Value): Value => n.op('Mul', [n.op('Mul', [x, n.op('Add', [erf(n.op('Div', [x, n.scalar(Math.SQRT2)])), n.scalar(1)])]), n.scalar(0.5)]);

  const h0 = layerNorm(emb, 'bert.embeddings.LayerNorm');
  const hd = dim / heads;
  const p = 'bert.encoder.layer.0.attention.self';
  const [q, k, v] = ['query', 'key', 'value'].map((s) => n.splitHeads(n.linear(h0, `${p}.${s}`, dim, dim), heads, hd)) as [Value, Value, Value];
  const bias = n.additiveMask(mask);
  const ctx = n.mergeHeads(n.attend(q, k, v, Math.sqrt(hd), (s) => n.op('Add', [s, bias])), dim);
  const h1 = layerNorm(n.op('Add', [n.linear(ctx, 'bert.encoder.layer.0.attention.output.dense', dim, dim), h0]), 'bert.encoder.layer.0.attention.output.LayerNorm');
  const inner = gelu(n.linear(h1, 'bert.encoder.layer.0.intermediate.dense', dim, ff));
  const h2 = layerNorm(n.op('Add', [n.linear(inner, 'bert.encoder.layer.0.output.dense', ff, dim), h1]), 'bert.encoder.layer.0.output.LayerNorm');
  const t = layerNorm(gelu(n.linear(h2, 'cls.predictions.transform.dense', dim, dim)), 'cls.predictions.transform.LayerNorm');
  const decoder = n.op('Transpose', [word], { perm: [1, 0] });
  const logits = n.op('Add', [n.op('MatMul', [t, decoder]), n.param('cls.predictions.bias', [vocab], 0.1)], {}, 'logits');
  n.b.output(logits, dtype, ['batch', 'sequence', vocab]);
  n.b.output(n.crossEntropy(logits, labels, vocab), dtype, []);
  return n.build();
}

// ---------------------------------------------------------------- T5

export const T5 = { vocab: 32, dim: 16, heads: 2, ff: 32, buckets: 8, maxDistance: 16 } as const;

/**
 * T5 encoder-decoder: shared embedding (encoder, decoder and the tied, d^-0.5-scaled LM head),
 * T5 RMS layer norm (Pow, ReduceMean, Add, Sqrt, Div, Mul), relative-position bias gathered from a
 * bucket table (bucket ids from Range/Abs/Log/Min/Where), ReLU FFN, causal decoder self-attention,
 * cross-attention, cross-entropy on `labels` (opset 14: the one-hot gather gradient).
 */
export function buildT5(options: FactoryOptions = {}): Model {
  const { dtype = 'double', opset = 14 } = options;
  const { vocab, dim, heads, ff, buckets, maxDistance } = T5;
  const hd = dim / heads;
  const n = new Net(dtype, opset, 't5');
  const ids = n.b.input('input_ids', 'int64', ['batch', 'encoder_sequence']);
  const mask = n.b.input('attention_mask', 'int64', ['batch', 'encoder_sequence']);
  const decIds = n.b.input('decoder_input_ids', 'int64', ['batch', 'decoder_sequence']);
  const labels = n.b.input('labels', 'int64', ['batch', 'decoder_sequence']);
  const shared = n.param('shared.weight', [vocab, dim], 1);

  const norm = (x: Value, name: string): Value => {
    const variance = n.reduceMean(n.op('Pow', [x, n.scalar(2)]));
    const y = n.op('Div', [x, n.op('Sqrt', [n.op('Add', [variance, n.scalar(1e-6)])])]);
    return n.op('Mul', [n.param(`${name}.weight`, [dim], 0.1, 1), y]);
  };
  /** [1, heads, Lq, Lk] from the bucket table, as transformers' T5Attention.compute_bias. */
  const positionBias = (x: Value, name: string, bidirectional: boolean): Value => {
    const len = n.scalarDim(x, 1);
    const range = n.op('Range', [n.int(0), len, n.int(1)]);
    const rel = n.op('Sub', [n.unsqueeze(range, [0]), n.unsqueeze(range, [1])]);
    const half = bidirectional ? buckets / 2 : buckets;
    const base = bidirectional ? n.op('Mul', [n.op('Cast', [n.op('Greater', [rel, n.int(0)])], { to: DataType.INT64 }), n.int(half)]) : undefined;
    const dist = bidirectional ? n.op('Abs', [rel]) : n.op('Neg', [n.op('Min', [rel, n.int(0)])]);
    const exact = half / 2;
    const logRatio = n.op('Div', [n.op('Log', [n.op('Div', [n.op('Cast', [dist], { to: DataType.FLOAT }), n.b.constant(`${name}.exact`, 'float', [], [exact])])]), n.b.constant(`${name}.log_span`, 'float', [], [Math.log(maxDistance / exact)])]);
    const large = n.op('Min', [n.op('Add', [n.int(exact), n.op('Cast', [n.op('Mul', [logRatio, n.b.constant(`${name}.span`, 'float', [], [half - exact])])], { to: DataType.INT64 })]), n.int(half - 1)]);
    let bucket = n.op('Where', [n.op('Less', [dist, n.int(exact)]), dist, large]);
    if (base) bucket = n.op('Add', [base, bucket]);
    const values = n.op('Gather', [n.param(`${name}.relative_attention_bias.weight`, [buckets, heads], 0.5), bucket], { axis: 0 });
    return n.unsqueeze(n.op('Transpose', [values], { perm: [2, 0, 1] }), [0]);
  };
  const attention = (xq: Value, xkv: Value, name: string, bias: Value): Value => {
    const proj = (x: Value, s: string) => n.splitHeads(n.linear(x, `${name}.${s}`, dim, dim, false), heads, hd);
    const ctx = n.attend(proj(xq, 'q'), proj(xkv, 'k'), proj(xkv, 'v'), undefined, (s) => n.op('Add', [s, bias]));
    return n.linear(n.mergeHeads(ctx, dim), `${name}.o`, dim, dim, false);
  };
  const ffn = (x: Value, name: string): Value => n.linear(n.op('Relu', [n.linear(x, `${name}.wi`, dim, ff, false)]), `${name}.wo`, ff, dim, false);

  // Encoder.
  const encMask = n.additiveMask(mask);
  let h = n.b.op('Gather', [shared, ids], { axis: 0 }, { name: 'encoder_embed_tokens', outputs: ['encoder_embeds'] });
  const encBias = n.op('Add', [positionBias(h, 'encoder.block.0.layer.0.SelfAttention', true), encMask]);
  const hn = norm(h, 'encoder.block.0.layer.0.layer_norm');
  h = n.op('Add', [h, attention(hn, hn, 'encoder.block.0.layer.0.SelfAttention', encBias)]);
  h = n.op('Add', [h, ffn(norm(h, 'encoder.block.0.layer.1.layer_norm'), 'encoder.block.0.layer.1.DenseReluDense')]);
  const encOut = norm(h, 'encoder.final_layer_norm');

  // Decoder: causal self-attention, cross-attention, FFN.
  let d = n.b.op('Gather', [shared, decIds], { axis: 0 }, { name: 'decoder_embed_tokens', outputs: ['decoder_embeds'] });
  const len = n.scalarDim(d, 1);
  const range = n.op('Range', [n.int(0), len, n.int(1)]);
  const future = n.op('Greater', [n.unsqueeze(range, [0]), n.unsqueeze(range, [1])]);
  const causal = n.op('Mul', [n.op('Cast', [future], { to: n.elem }), n.scalar(n.lowest)]);
  const selfBias = n.op('Add', [positionBias(d, 'decoder.block.0.layer.0.SelfAttention', false), causal]);
  const dn = norm(d, 'decoder.block.0.layer.0.layer_norm');
  d = n.op('Add', [d, attention(dn, dn, 'decoder.block.0.layer.0.SelfAttention', selfBias)]);
  d = n.op('Add', [d, attention(norm(d, 'decoder.block.0.layer.1.layer_norm'), encOut, 'decoder.block.0.layer.1.EncDecAttention', encMask)]);
  d = n.op('Add', [d, ffn(norm(d, 'decoder.block.0.layer.2.layer_norm'), 'decoder.block.0.layer.2.DenseReluDense')]);
  const out = n.op('Mul', [norm(d, 'decoder.final_layer_norm'), n.scalar(dim ** -0.5)]);
  const logits = n.op('MatMul', [out, n.op('Transpose', [shared], { perm: [1, 0] })], {}, 'logits');
  n.b.output(logits, dtype, ['batch', 'decoder_sequence', vocab]);
  n.b.output(n.crossEntropy(logits, labels, vocab), dtype, []);
  return n.build();
}

// ---------------------------------------------------------------- Gemma / Llama

export const DECODER = { vocab: 32, dim: 16, heads: 4, kvHeads: 2, headDim: 4, ff: 32, positions: 16 } as const;

export interface DecoderOptions extends FactoryOptions {
  /** gemma: embeddings scaled by sqrt(d), RMS norm times (1 + w), tanh-GELU gated MLP; llama: w, SiLU gated MLP. */
  flavor?: 'gemma' | 'llama';
}

/**
 * Gemma/Llama-style decoder: RMS norm, rotary embeddings (Slice/Neg/Concat/Mul with Cos/Sin tables
 * gathered by position), grouped-query attention (Unsqueeze/Expand/Reshape of K and V), a Where
 * causal-and-padding mask, gated MLP, tied LM head; `logits` for the causal-LM loss.
 */
export function buildDecoder(options: DecoderOptions = {}): Model {
  const { dtype = 'double', opset = 17, flavor = 'gemma' } = options;
  const { vocab, dim, heads, kvHeads, headDim: hd, ff, positions } = DECODER;
  const n = new Net(dtype, opset, flavor);
  const ids = n.b.input('input_ids', 'int64', ['batch', 'sequence']);
  const mask = n.b.input('attention_mask', 'int64', ['batch', 'sequence']);
  const embed = n.param('model.embed_tokens.weight', [vocab, dim], 0.5);
  let x = n.b.op('Gather', [embed, ids], { axis: 0 }, { name: 'embed_tokens', outputs: ['inputs_embeds'] });
  if (flavor === 'gemma') x = n.b.op('Mul', [x, n.scalar(Math.sqrt(dim))], {}, { name: 'embed_scale_mul', outputs: ['scaled_embeds'] });

  const norm = (v: Value, name: string): Value => {
    const y = n.op('Mul', [v, n.op('Reciprocal', [n.op('Sqrt', [n.op('Add', [n.reduceMean(n.op('Pow', [v, n.scalar(2)])), n.scalar(1e-6)])])])]);
    const w = n.param(`${name}.weight`, [dim], 0.1, flavor === 'gemma' ? 0 : 1);
    return n.op('Mul', [y, flavor === 'gemma' ? n.op('Add', [n.scalar(1), w]) : w]);
  };
  // Rotary tables as exporters constant-fold them: cos/sin of position * inv_freq, halves repeated.
  const angles = Array.from({ length: positions }, (_, pos) => Array.from({ length: hd }, (_, i) => pos / 10000 ** (((i % (hd / 2)) * 2) / hd))).flat();
  const cosTable = n.table('model.rotary_emb.cos_cached', [positions, hd], angles.map(Math.cos));
  const sinTable = n.table('model.rotary_emb.sin_cached', [positions, hd], angles.map(Math.sin));
  const len = n.scalarDim(ids, 1);
  const range = n.op('Range', [n.int(0), len, n.int(1)]);
  const positionIds = n.unsqueeze(range, [0]);
  const cos = n.unsqueeze(n.op('Gather', [cosTable, positionIds], { axis: 0 }), [1]);
  const sin = n.unsqueeze(n.op('Gather', [sinTable, positionIds], { axis: 0 }), [1]);
  const rotate = (v: Value): Value => {
    const first = n.op('Slice', [v, n.ints([0]), n.ints([hd / 2]), n.ints([3])]);
    const second = n.op('Slice', [v, n.ints([hd / 2]), n.ints([INT64_MAX]), n.ints([3])]);
    const rotated = n.op('Concat', [n.op('Neg', [second]), first], { axis: -1 });
    return n.op('Add', [n.op('Mul', [v, cos]), n.op('Mul', [rotated, sin])]);
  };
  const repeatKv = (v: Value): Value => {
    const b = n.dim(v, 0), l = n.dim(v, 2);
    const expanded = n.op('Expand', [n.unsqueeze(v, [2]), n.op('Concat', [b, n.ints([kvHeads, heads / kvHeads]), l, n.ints([hd])], { axis: 0 })]);
    return n.op('Reshape', [expanded, n.op('Concat', [b, n.ints([heads]), l, n.ints([hd])], { axis: 0 })]);
  };
  const causal = n.op('LessOrEqual', [n.unsqueeze(range, [0]), n.unsqueeze(range, [1])]);
  const allowed = n.op('And', [causal, n.op('Cast', [n.unsqueeze(mask, [1, 2])], { to: DataType.BOOL })]);
  const lowest = n.scalar(n.lowest);

  const p = 'model.layers.0';
  const hn = norm(x, `${p}.input_layernorm`);
  const q = rotate(n.splitHeads(n.linear(hn, `${p}.self_attn.q_proj`, dim, heads * hd, false), heads, hd));
  const k = repeatKv(rotate(n.splitHeads(n.linear(hn, `${p}.self_attn.k_proj`, dim, kvHeads * hd, false), kvHeads, hd)));
  const v = repeatKv(n.splitHeads(n.linear(hn, `${p}.self_attn.v_proj`, dim, kvHeads * hd, false), kvHeads, hd));
  const ctx = n.attend(q, k, v, Math.sqrt(hd), (s) => n.op('Where', [allowed, s, lowest]));
  let h = n.op('Add', [x, n.linear(n.mergeHeads(ctx, heads * hd), `${p}.self_attn.o_proj`, heads * hd, dim, false)]);

  const mn = norm(h, `${p}.post_attention_layernorm`);
  const gate = n.linear(mn, `${p}.mlp.gate_proj`, dim, ff, false);
  const act = flavor === 'gemma' ? geluTanh(n, gate) : n.op('Mul', [gate, n.op('Sigmoid', [gate])]);
  h = n.op('Add', [h, n.linear(n.op('Mul', [act, n.linear(mn, `${p}.mlp.up_proj`, dim, ff, false)]), `${p}.mlp.down_proj`, ff, dim, false)]);
  const logits = n.op('MatMul', [norm(h, 'model.norm'), n.op('Transpose', [embed], { perm: [1, 0] })], {}, 'logits');
  n.b.output(logits, dtype, ['batch', 'sequence', vocab]);
  return n.build();
}

/** gelu(x, approximate='tanh') as torch.onnx writes it below opset 20. */
function geluTanh(n: Net, x: Value): Value {
  const inner = n.op('Mul', [n.op('Add', [x, n.op('Mul', [n.op('Pow', [x, n.scalar(3)]), n.scalar(0.044715)])]), n.scalar(Math.sqrt(2 / Math.PI))]);
  return n.op('Mul', [n.op('Mul', [x, n.scalar(0.5)]), n.op('Add', [n.op('Tanh', [inner]), n.scalar(1)])]);
}

/** Every float initializer of `model` except the named ones (the rotary tables are constants, not weights). */
export function trainableParams(model: Model, except: readonly string[] = ['model.rotary_emb.cos_cached', 'model.rotary_emb.sin_cached']): string[] {
  return model.graph.initializers.filter((v) => v.initializer!.dataType === DataType.FLOAT || v.initializer!.dataType === DataType.DOUBLE).map((v) => v.name).filter((name) => !except.includes(name));
}

// ---------------------------------------------------------------- feeds and a training loop

const int64 = (values: number[], dims: number[]) => new ort.Tensor('int64', BigInt64Array.from(values.map(BigInt)), dims);
const seqIds = (batch: number, seq: number, vocab: number, salt: number) => Array.from({ length: batch * seq }, (_, i) => (i * 7 + salt * 5 + 3) % vocab);
/** Row 0 full, row 1 with its last two tokens padded. */
const rightPadded = (batch: number, seq: number) => Array.from({ length: batch * seq }, (_, i) => (i >= seq && i % seq >= seq - 2 ? 0 : 1));

/** Inputs for each factory: a padded second row, labels with -100 where the mask is 0 and at one more token. */
export function bertFeeds(batch = 2, seq = 6): Record<string, ort.Tensor> {
  const mask = rightPadded(batch, seq);
  const ids = seqIds(batch, seq, BERT.vocab, 1);
  return {
    input_ids: int64(ids, [batch, seq]),
    token_type_ids: int64(ids.map((_, i) => (i % seq >= seq / 2 ? 1 : 0)), [batch, seq]),
    attention_mask: int64(mask, [batch, seq]),
    labels: int64(ids.map((id, i) => (mask[i] && i !== 2 ? (id * 3 + 1) % BERT.vocab : -100)), [batch, seq]),
  };
}
export function t5Feeds(batch = 2, seq = 5, decSeq = 4): Record<string, ort.Tensor> {
  const dec = seqIds(batch, decSeq, T5.vocab, 2);
  return {
    input_ids: int64(seqIds(batch, seq, T5.vocab, 1), [batch, seq]),
    attention_mask: int64(rightPadded(batch, seq), [batch, seq]),
    decoder_input_ids: int64(dec, [batch, decSeq]),
    labels: int64(dec.map((id, i) => (i === decSeq * batch - 1 ? -100 : (id + 5) % T5.vocab)), [batch, decSeq]),
  };
}
export function decoderFeeds(batch = 2, seq = 6): Record<string, ort.Tensor> {
  return { input_ids: int64(seqIds(batch, seq, DECODER.vocab, 1), [batch, seq]), attention_mask: int64(rightPadded(batch, seq), [batch, seq]) };
}

/** Runs `steps` training steps in one session, feeding each step's `.new` outputs back; returns the losses. */
export async function trainLosses(source: Model, options: TrainingStepOptions, data: Record<string, ort.Tensor>, lr: number, steps: number): Promise<number[]> {
  const step = buildTrainingStep(source, options);
  const s = await session(step.model);
  let feeds = stepFeeds(source, step, lr, data);
  const seen: number[] = [];
  for (let k = 1; k <= steps; k++) {
    const out = await s.run(feeds);
    seen.push(scalarOf(out[step.record.loss]!));
    const next = { ...feeds };
    for (const p of [...step.record.params, ...step.record.state]) next[p.input] = out[p.output]!;
    if (step.record.step) next[step.record.step] = int64([k + 1], []);
    feeds = next;
  }
  await s.release();
  return seen;
}
