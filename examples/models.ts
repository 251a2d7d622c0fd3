/**
 * Small transformer-shaped models built with the project's own builder: real embedding tables,
 * dynamic batch and sequence, runnable on onnxruntime-node. Tests, benchmarks and the README
 * example all use these.
 */
import { DataType, ModelBuilder, Tensor, attr, type GraphBuilder, type Model, type Value } from '../src/graph/index.js';

export type FloatType = 'float' | 'float16' | 'bfloat16';

/** Deterministic pseudo-random floats in [-scale, scale) (xorshift32), so models are reproducible. */
export function randomFloats(count: number, seed: number, scale = 0.5): Float32Array {
  const out = new Float32Array(count);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < count; i++) {
    x ^= x << 13; x >>>= 0; x ^= x >>> 17; x ^= x << 5; x >>>= 0;
    out[i] = ((x / 4294967296) * 2 - 1) * scale;
  }
  return out;
}

export interface TinyModelOptions {
  vocab?: number;
  dim?: number;
  maxPositions?: number;
  dtype?: FloatType;
  opset?: number;
  irVersion?: number;
  /** Also expose the raw lookup outputs as graph outputs (for tests that read them). */
  exposeEmbeddings?: boolean;
  /** Take `position_ids` [batch, sequence] as a graph input (packed rows) instead of computing 0..L-1. */
  positionIdsInput?: boolean;
}

function table(b: GraphBuilder, name: string, rows: number, dim: number, dtype: FloatType, seed: number, options: { asInput?: boolean } = {}): Value {
  return b.initializer(name, Tensor.fromArray(dtype, [rows, dim], randomFloats(rows * dim, seed)), options);
}

/**
 * Casts to float32 when the model's float type is narrower, so later ops run on every EP.
 * The cast of a lookup is named `<lookup>_float`, which tests read (ORT's JS API cannot return bf16).
 */
function toFloat(b: GraphBuilder, x: Value, dtype: FloatType): Value {
  return dtype === 'float' ? x : b.op('Cast', [x], { to: DataType.FLOAT }, { outputs: [`${x.name}_float`] });
}

/** Graph output showing a lookup's value as float32 (the lookup itself when already float32). */
function expose(b: GraphBuilder, asFloat: Value, dim: number, seqDim: string): void {
  b.output(asFloat, 'float', ['batch', seqDim, dim]);
}

function layerNorm(b: GraphBuilder, x: Value, dim: number, prefix: string, opset: number): Value {
  const gamma = b.constant(`${prefix}.weight`, 'float', [dim], new Float32Array(dim).fill(1));
  const beta = b.constant(`${prefix}.bias`, 'float', [dim], new Float32Array(dim));
  if (opset < 17) return b.op('Add', [b.op('Mul', [x, gamma]), beta]); // affine part only before opset 17
  return b.op('LayerNormalization', [x, gamma, beta], { axis: -1, epsilon: attr.float(1e-5) });
}

function positionIds(b: GraphBuilder, ids: Value, asInput: boolean | undefined, opset: number): Value {
  if (asInput) return b.input('position_ids', 'int64', ['batch', 'sequence']);
  const shape = b.op('Shape', [ids]);
  const one = b.constant('pos.one', 'int64', [], [1]);
  const zero = b.constant('pos.zero', 'int64', [], [0]);
  const seq = b.op('Gather', [shape, one], { axis: 0 });
  const range = b.op('Range', [zero, seq, one]);
  if (opset < 13) return b.op('Unsqueeze', [range], { axes: [0] }, { outputs: ['position_ids'] });
  return b.op('Unsqueeze', [range, b.constant('pos.axes', 'int64', [1], [0])], {}, { outputs: ['position_ids'] });
}

/** GPT-2 shaped: token + learned position embeddings, LayerNorm, tied LM head. */
export function buildTinyGpt(options: TinyModelOptions = {}): Model {
  const { vocab = 64, dim = 16, maxPositions = 32, dtype = 'float', opset = 17, irVersion = 8 } = options;
  const b = new ModelBuilder({ opset, irVersion, graphName: 'tiny_gpt' });
  const ids = b.input('input_ids', 'int64', ['batch', 'sequence']);
  const wte = table(b, 'transformer.wte.weight', vocab, dim, dtype, 11);
  const wpe = table(b, 'transformer.wpe.weight', maxPositions, dim, dtype, 12);
  const tok = b.op('Gather', [wte, ids], { axis: 0 }, { name: 'wte_lookup', outputs: ['inputs_embeds'] });
  const pos = b.op('Gather', [wpe, positionIds(b, ids, options.positionIdsInput, opset)], { axis: 0 }, { name: 'wpe_lookup', outputs: ['position_embeds'] });
  const tokF = toFloat(b, tok, dtype);
  const hidden = b.op('Add', [tokF, toFloat(b, pos, dtype)]);
  const normed = layerNorm(b, hidden, dim, 'ln_f', opset);
  const head = toFloat(b, b.op('Transpose', [wte], { perm: [1, 0] }), dtype);
  b.output(b.op('MatMul', [normed, head], {}, { outputs: ['logits'] }), 'float', ['batch', 'sequence', vocab]);
  if (options.exposeEmbeddings) expose(b, tokF, dim, 'sequence');
  return b.build();
}

/** BERT shaped: word + position + token-type embeddings, attention mask applied to the output. */
export function buildTinyBert(options: TinyModelOptions = {}): Model {
  const { vocab = 64, dim = 16, maxPositions = 32, dtype = 'float', opset = 17, irVersion = 8 } = options;
  const b = new ModelBuilder({ opset, irVersion, graphName: 'tiny_bert' });
  const ids = b.input('input_ids', 'int64', ['batch', 'sequence']);
  const types = b.input('token_type_ids', 'int64', ['batch', 'sequence']);
  const mask = b.input('attention_mask', 'int64', ['batch', 'sequence']);
  const word = table(b, 'embeddings.word_embeddings.weight', vocab, dim, dtype, 21);
  const position = table(b, 'embeddings.position_embeddings.weight', maxPositions, dim, dtype, 22);
  const tokenType = table(b, 'embeddings.token_type_embeddings.weight', 2, dim, dtype, 23);
  const w = b.op('Gather', [word, ids], { axis: 0 }, { name: 'word_lookup', outputs: ['word_embeds'] });
  const p = b.op('Gather', [position, positionIds(b, ids, options.positionIdsInput, opset)], { axis: 0 }, { name: 'position_lookup' });
  const t = b.op('Gather', [tokenType, types], { axis: 0 }, { name: 'token_type_lookup' });
  const wF = toFloat(b, w, dtype);
  const sum = b.op('Add', [b.op('Add', [wF, toFloat(b, p, dtype)]), toFloat(b, t, dtype)]);
  const normed = layerNorm(b, sum, dim, 'embeddings.LayerNorm', opset);
  const dense = b.constant('encoder.dense.weight', 'float', [dim, dim], randomFloats(dim * dim, 24));
  const maskCast = b.op('Cast', [mask], { to: DataType.FLOAT });
  const maskF = opset >= 13 ? b.op('Unsqueeze', [maskCast, b.constant('mask.axes', 'int64', [1], [2])]) : b.op('Unsqueeze', [maskCast], { axes: [2] });
  const out = b.op('Mul', [b.op('MatMul', [normed, dense]), maskF], {}, { outputs: ['last_hidden_state'] });
  b.output(out, 'float', ['batch', 'sequence', dim]);
  if (options.exposeEmbeddings) expose(b, wF, dim, 'sequence');
  return b.build();
}

/** T5 shaped: one `shared` table read by the encoder and by the decoder, tied LM head. */
export function buildTinyT5(options: TinyModelOptions = {}): Model {
  const { vocab = 64, dim = 16, dtype = 'float', opset = 17, irVersion = 8 } = options;
  const b = new ModelBuilder({ opset, irVersion, graphName: 'tiny_t5' });
  const ids = b.input('input_ids', 'int64', ['batch', 'encoder_sequence']);
  const decIds = b.input('decoder_input_ids', 'int64', ['batch', 'decoder_sequence']);
  const shared = table(b, 'shared.weight', vocab, dim, dtype, 31);
  const enc = b.op('Gather', [shared, ids], { axis: 0 }, { name: 'encoder_embed_tokens', outputs: ['encoder_embeds'] });
  const dec = b.op('Gather', [shared, decIds], { axis: 0 }, { name: 'decoder_embed_tokens', outputs: ['decoder_embeds'] });
  const encW = b.constant('encoder.block.0.weight', 'float', [dim, dim], randomFloats(dim * dim, 32));
  const encF = toFloat(b, enc, dtype);
  const decF = toFloat(b, dec, dtype);
  const encOut = b.op('MatMul', [encF, encW]);
  const context = b.op('ReduceMean', [encOut], { axes: [1], keepdims: 1 });
  const decHidden = b.op('Add', [decF, context]);
  const head = toFloat(b, b.op('Transpose', [shared], { perm: [1, 0] }), dtype);
  b.output(b.op('MatMul', [decHidden, head], {}, { outputs: ['logits'] }), 'float', ['batch', 'decoder_sequence', vocab]);
  if (options.exposeEmbeddings) {
    expose(b, encF, dim, 'encoder_sequence');
    expose(b, decF, dim, 'decoder_sequence');
  }
  return b.build();
}

/**
 * Gemma shaped: embeddings scaled by sqrt(d) right after the lookup (behind a Cast to float32 for
 * fp16/bf16 tables, since ONNX Runtime's CPU EP has no bf16 Mul), plus a rotary cos cache lookup.
 */
export function buildTinyGemma(options: TinyModelOptions = {}): Model {
  const { vocab = 64, dim = 16, maxPositions = 32, dtype = 'float', opset = 17, irVersion = 8 } = options;
  const b = new ModelBuilder({ opset, irVersion, graphName: 'tiny_gemma' });
  const ids = b.input('input_ids', 'int64', ['batch', 'sequence']);
  const embed = table(b, 'model.embed_tokens.weight', vocab, dim, dtype, 41);
  const cos = table(b, 'model.rotary_emb.cos_cached', maxPositions, dim / 2, dtype, 42);
  const tok = b.op('Gather', [embed, ids], { axis: 0 }, { name: 'embed_tokens', outputs: ['inputs_embeds'] });
  const normalizer = b.constant('model.embed_scale', 'float', [], [Math.sqrt(dim)]);
  const scaled = b.op('Mul', [toFloat(b, tok, dtype), normalizer], {}, { name: 'embed_scale_mul', outputs: ['scaled_embeds'] });
  const cosValues = b.op('Gather', [cos, positionIds(b, ids, options.positionIdsInput, opset)], { axis: 0 }, { name: 'rotary_cos_lookup' });
  const rot = b.op('ReduceMean', [toFloat(b, cosValues, dtype)], { axes: [-1], keepdims: 1 });
  const hidden = b.op('Add', [scaled, rot]);
  const normed = layerNorm(b, hidden, dim, 'model.norm', opset);
  const head = toFloat(b, b.op('Transpose', [embed], { perm: [1, 0] }), dtype);
  b.output(b.op('MatMul', [normed, head], {}, { outputs: ['logits'] }), 'float', ['batch', 'sequence', vocab]);
  if (options.exposeEmbeddings) expose(b, scaled, dim, 'sequence');
  return b.build();
}

/**
 * A training graph in standard ops: embedding Gather -> linear -> squared-error loss, and its
 * backward pass written out by hand. The backward reads the embedding activation (for the linear
 * layer's weight gradient) and computes the table gradient with a one-hot MatMul, as exporters do.
 * The table is a graph input, as in ONNX Runtime training artifacts.
 */
export function buildTinyTrainingGraph(options: { vocab?: number; dim?: number; classes?: number; opset?: number } = {}): Model {
  const { vocab = 32, dim = 16, classes = 4, opset = 17 } = options;
  const b = new ModelBuilder({ opset, irVersion: 8, graphName: 'tiny_training' });
  const ids = b.input('input_ids', 'int64', ['batch', 'sequence']);
  const target = b.input('target', 'float', ['batch', 'sequence', classes]);
  const table = b.input('embedding.weight', 'float', [vocab, dim]);
  const weight = b.input('head.weight', 'float', [dim, classes]);
  // Forward.
  const emb = b.op('Gather', [table, ids], { axis: 0 }, { name: 'embedding', outputs: ['embedding_output'] });
  const logits = b.op('MatMul', [emb, weight], {}, { name: 'head', outputs: ['logits'] });
  const err = b.op('Sub', [logits, target], {}, { name: 'error' });
  const loss = b.op('ReduceMean', [b.op('Mul', [err, err])], { keepdims: 0 }, { name: 'loss', outputs: ['loss'] });
  // Backward: dloss/dlogits = 2 * err / N.
  const count = b.op('Cast', [b.op('Size', [err])], { to: DataType.FLOAT });
  const dLogits = b.op('Div', [b.op('Mul', [err, b.constant('two', 'float', [], [2])]), count], {}, { name: 'logits_grad' });
  const flatShape = b.constant('flat_shape', 'int64', [2], [-1, dim]);
  const embFlat = b.op('Reshape', [emb, flatShape], {}, { name: 'embedding_output_flat' });
  const dLogitsFlat = b.op('Reshape', [dLogits, b.constant('flat_classes', 'int64', [2], [-1, classes])]);
  const dWeight = b.op('MatMul', [b.op('Transpose', [embFlat], { perm: [1, 0] }), dLogitsFlat], {}, { name: 'head_weight_grad', outputs: ['head.weight_grad'] });
  const dEmb = b.op('MatMul', [dLogits, b.op('Transpose', [weight], { perm: [1, 0] })], {}, { name: 'embedding_output_grad' });
  const oneHot = b.op('OneHot', [ids, b.constant('depth', 'int64', [], [vocab]), b.constant('onehot_values', 'float', [2], [0, 1])], { axis: -1 });
  const oneHotFlat = b.op('Reshape', [oneHot, b.constant('flat_vocab', 'int64', [2], [-1, vocab])]);
  const dTable = b.op('MatMul', [b.op('Transpose', [oneHotFlat], { perm: [1, 0] }), b.op('Reshape', [dEmb, flatShape])], {}, { name: 'embedding_weight_grad', outputs: ['embedding.weight_grad'] });
  b.output(loss, 'float', []);
  b.output(dTable, 'float', [vocab, dim]);
  b.output(dWeight, 'float', [dim, classes]);
  return b.build();
}
