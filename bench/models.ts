/** Builder-made models for the benchmarks: big weights, many nodes, BERT-base shape. */
import { ModelBuilder, Tensor, attr, type Model, type Value } from '../src/graph/index.js';
import { randomFloats } from '../examples/models.js';

/** GPT-shaped, single file: vocab x dim token table plus `layers` MLP blocks of dim x 4dim weights. */
export function buildLargeGpt(options: { vocab?: number; dim?: number; layers?: number } = {}): Model {
  const { vocab = 50_000, dim = 1024, layers = 12 } = options;
  const b = new ModelBuilder({ opset: 17, irVersion: 8, graphName: 'large_gpt' });
  const ids = b.input('input_ids', 'int64', ['batch', 'sequence']);
  const wte = b.initializer('transformer.wte.weight', Tensor.fromArray('float', [vocab, dim], randomFloats(vocab * dim, 1, 0.02)));
  const wpe = b.initializer('transformer.wpe.weight', Tensor.fromArray('float', [1024, dim], randomFloats(1024 * dim, 2, 0.02)));
  const shape = b.op('Shape', [ids]);
  const seq = b.op('Gather', [shape, b.constant('one', 'int64', [], [1])], { axis: 0 });
  const positions = b.op('Range', [b.constant('zero', 'int64', [], [0]), seq, b.constant('step', 'int64', [], [1])]);
  let h: Value = b.op('Add', [b.op('Gather', [wte, ids], { axis: 0 }, { name: 'wte_lookup' }), b.op('Gather', [wpe, positions], { axis: 0 })]);
  for (let l = 0; l < layers; l++) {
    const up = b.initializer(`h.${l}.mlp.up.weight`, Tensor.fromArray('float', [dim, 4 * dim], randomFloats(dim * 4 * dim, 10 + l, 0.02)));
    const down = b.initializer(`h.${l}.mlp.down.weight`, Tensor.fromArray('float', [4 * dim, dim], randomFloats(dim * 4 * dim, 100 + l, 0.02)));
    h = b.op('Add', [h, b.op('MatMul', [b.op('Relu', [b.op('MatMul', [h, up])]), down])]);
  }
  b.output(h, 'float', ['batch', 'sequence', dim]);
  return b.build();
}

/**
 * A graph of about `nodes` nodes (embedding lookup then a long chain of small ops), for measuring
 * how graph size scales. Weights are tiny; the graph itself is what is large.
 */
export function buildManyNodes(nodes: number): Model {
  const b = new ModelBuilder({ opset: 17, irVersion: 8, graphName: `chain_${nodes}` });
  const ids = b.input('input_ids', 'int64', ['batch', 'sequence']);
  const wte = b.initializer('wte', Tensor.fromArray('float', [1000, 8], randomFloats(8000, 3)));
  let h: Value = b.op('Gather', [wte, ids], { axis: 0 }, { name: 'wte_lookup' });
  const scale = b.constant('scale', 'float', [], [1.0001]);
  for (let i = 1; i < nodes; i++) h = b.op(i % 2 ? 'Mul' : 'Relu', i % 2 ? [h, scale] : [h], {}, { name: `n${i}` });
  b.output(h, 'float', ['batch', 'sequence', 8]);
  return b.build();
}

/** BERT-base shaped forward: 12 layers, d 768, 12 heads, real attention, random weights. */
export function buildBertBase(options: { layers?: number; dim?: number; heads?: number; vocab?: number } = {}): Model {
  const { layers = 12, dim = 768, heads = 12, vocab = 30522 } = options;
  const ff = 4 * dim;
  const b = new ModelBuilder({ opset: 17, irVersion: 8, graphName: 'bert_base' });
  const ids = b.input('input_ids', 'int64', ['batch', 'sequence']);
  let seed = 1;
  const w = (name: string, dims: number[]) => b.initializer(name, Tensor.fromArray('float', dims, randomFloats(dims.reduce((a, c) => a * c, 1), seed++, 0.02)));
  const ln = (x: Value, name: string) => b.op('LayerNormalization', [x, b.constant(`${name}.g`, 'float', [dim], new Float32Array(dim).fill(1)), b.constant(`${name}.b`, 'float', [dim], new Float32Array(dim))], { axis: -1, epsilon: attr.float(1e-12) });
  const word = w('embeddings.word_embeddings.weight', [vocab, dim]);
  const pos = w('embeddings.position_embeddings.weight', [512, dim]);
  const shape = b.op('Shape', [ids]);
  const seq = b.op('Gather', [shape, b.constant('one', 'int64', [], [1])], { axis: 0 });
  const positions = b.op('Range', [b.constant('zero', 'int64', [], [0]), seq, b.constant('step', 'int64', [], [1])]);
  let h = ln(b.op('Add', [b.op('Gather', [word, ids], { axis: 0 }, { name: 'word_lookup' }), b.op('Gather', [pos, positions], { axis: 0 })]), 'emb_ln');
  const headShape = b.constant('head_shape', 'int64', [4], [0, 0, heads, dim / heads]);
  const mergeShape = b.constant('merge_shape', 'int64', [3], [0, 0, dim]);
  const scaleQ = b.constant('scale_q', 'float', [], [1 / Math.sqrt(dim / heads)]);
  for (let l = 0; l < layers; l++) {
    const proj = (x: Value, name: string, din: number, dout: number) => b.op('Add', [b.op('MatMul', [x, w(`l${l}.${name}.w`, [din, dout])]), w(`l${l}.${name}.b`, [dout])]);
    const split = (x: Value) => b.op('Transpose', [b.op('Reshape', [x, headShape])], { perm: [0, 2, 1, 3] });
    const q = split(b.op('Mul', [proj(h, 'q', dim, dim), scaleQ]));
    const k = b.op('Transpose', [b.op('Reshape', [proj(h, 'k', dim, dim), headShape])], { perm: [0, 2, 3, 1] });
    const v = split(proj(h, 'v', dim, dim));
    const probs = b.op('Softmax', [b.op('MatMul', [q, k])], { axis: -1 });
    const ctx = b.op('Reshape', [b.op('Transpose', [b.op('MatMul', [probs, v])], { perm: [0, 2, 1, 3] }), mergeShape]);
    h = ln(b.op('Add', [h, proj(ctx, 'o', dim, dim)]), `l${l}.ln1`);
    const mid = b.op('Relu', [proj(h, 'ff1', dim, ff)]);
    h = ln(b.op('Add', [h, proj(mid, 'ff2', ff, dim)]), `l${l}.ln2`);
  }
  b.output(h, 'float', ['batch', 'sequence', dim]);
  return b.build();
}

/**
 * Llama-2-7B shaped (32 layers, d 4096, MLP 11008, vocab 32000, fp32) with every weight in one
 * external data file `location` (about 27 GB; the bench makes it sparse), or each in a file of its
 * own (`filePerTensor`). `files` gives each data file's size. Optimum's export has
 * 9,878 nodes, most of them shape bookkeeping; each layer here has its attention, RoPE, RMSNorm
 * and SwiGLU ops plus shape chains, padded so the graph has exactly `nodes` nodes.
 */
export function buildLlamaShaped(options: { location?: string; filePerTensor?: boolean; layers?: number; dim?: number; ff?: number; vocab?: number; nodes?: number } = {}): { model: Model; dataBytes: number; files: Map<string, number> } {
  const { location = 'model.onnx_data', layers = 32, dim = 4096, ff = 11008, vocab = 32000, nodes = 9878 } = options;
  const files = new Map<string, number>();
  const b = new ModelBuilder({ opset: 17, irVersion: 8, graphName: 'llama_shaped' });
  let offset = 0;
  const weight = (name: string, dims: number[]) => {
    const length = dims.reduce((a, c) => a * c, 4);
    // torch.onnx.export writes one file per tensor; onnx.save(all_tensors_to_one_file=True) one file.
    const file = options.filePerTensor ? name : location;
    const at = files.get(file) ?? 0;
    files.set(file, at + length);
    offset += length;
    return b.initializer(name, Tensor.external('float', dims, { location: file, offset: at, length }));
  };
  const ids = b.input('input_ids', 'int64', ['batch', 'sequence']);
  const mask = b.input('attention_mask', 'int64', ['batch', 'total_sequence']);
  const embed = weight('model.embed_tokens.weight', [vocab, dim]);
  let h = b.op('Gather', [embed, ids], { axis: 0 }, { name: '/model/embed_tokens/Gather' });
  const c = (name: string, dims: number[], data: number[], type = 'int64') => b.constant(name, type, dims, data);
  const [zero, one, two, eps] = [c('c0', [1], [0]), c('c1', [1], [1]), c('c2', [], [2], 'float'), c('eps', [], [1e-5], 'float')];
  const maskF = b.op('Cast', [mask], { to: 1 });
  const heads = 32, headDim = dim / heads;
  const cos = b.constant('cos_cache', 'float', [64, headDim / 2], new Float32Array(64 * headDim / 2));
  const sin = b.constant('sin_cache', 'float', [64, headDim / 2], new Float32Array(64 * headDim / 2));
  const rmsNorm = (x: Value, name: string) => {
    const variance = b.op('ReduceMean', [b.op('Pow', [x, two])], { axes: [-1], keepdims: 1 });
    const normed = b.op('Mul', [x, b.op('Reciprocal', [b.op('Sqrt', [b.op('Add', [variance, eps])])])]);
    return b.op('Mul', [normed, weight(name, [dim])]);
  };
  // A shape chain as the export writes it for every reshape: Shape, Gather, Unsqueeze, Concat.
  const shapeOf = (x: Value, tail: number[]) => {
    const s = b.op('Shape', [x]);
    const batch = b.op('Unsqueeze', [b.op('Gather', [s, zero], { axis: 0 }), zero]);
    const seq = b.op('Unsqueeze', [b.op('Gather', [s, one], { axis: 0 }), zero]);
    return b.op('Concat', [batch, seq, c(`tail_${b.graph.nodeCount}`, [tail.length], tail)], { axis: 0 });
  };
  const rope = (x: Value) => {
    const half = c(`half_${b.graph.nodeCount}`, [1], [headDim / 2]);
    const end = c(`end_${b.graph.nodeCount}`, [1], [headDim]);
    const x1 = b.op('Slice', [x, zero, half, c(`ax_${b.graph.nodeCount}`, [1], [-1])]);
    const x2 = b.op('Slice', [x, half, end, c(`ax_${b.graph.nodeCount}`, [1], [-1])]);
    const rotated = b.op('Concat', [b.op('Neg', [x2]), x1], { axis: -1 });
    const cosT = b.op('Unsqueeze', [b.op('Gather', [cos, ids], { axis: 0 }), one]);
    const sinT = b.op('Unsqueeze', [b.op('Gather', [sin, ids], { axis: 0 }), one]);
    return b.op('Add', [b.op('Mul', [x, b.op('Concat', [cosT, cosT], { axis: -1 })]), b.op('Mul', [rotated, b.op('Concat', [sinT, sinT], { axis: -1 })])]);
  };
  const padding: Value[] = [];
  for (let l = 0; l < layers; l++) {
    const p = `model.layers.${l}`;
    const x = rmsNorm(h, `${p}.input_layernorm.weight`);
    const split = (w: string) => b.op('Transpose', [b.op('Reshape', [b.op('MatMul', [x, weight(`${p}.self_attn.${w}_proj.weight`, [dim, dim])]), shapeOf(x, [heads, headDim])])], { perm: [0, 2, 1, 3] });
    const q = rope(split('q')), k = rope(split('k')), v = split('v');
    const scores = b.op('Add', [b.op('Div', [b.op('MatMul', [q, b.op('Transpose', [k], { perm: [0, 1, 3, 2] })]), c(`scale_${l}`, [], [Math.sqrt(headDim)], 'float')]), maskF]);
    const attn = b.op('MatMul', [b.op('Softmax', [scores], { axis: -1 }), v]);
    const merged = b.op('Reshape', [b.op('Transpose', [attn], { perm: [0, 2, 1, 3] }), shapeOf(x, [dim])]);
    h = b.op('Add', [h, b.op('MatMul', [merged, weight(`${p}.self_attn.o_proj.weight`, [dim, dim])])]);
    const y = rmsNorm(h, `${p}.post_attention_layernorm.weight`);
    const gate = b.op('MatMul', [y, weight(`${p}.mlp.gate_proj.weight`, [dim, ff])]);
    const up = b.op('MatMul', [y, weight(`${p}.mlp.up_proj.weight`, [dim, ff])]);
    const act = b.op('Mul', [b.op('Mul', [gate, b.op('Sigmoid', [gate])]), up]);
    h = b.op('Add', [h, b.op('MatMul', [act, weight(`${p}.mlp.down_proj.weight`, [ff, dim])])]);
    padding.push(b.op('Shape', [h]));
  }
  const logits = b.op('MatMul', [rmsNorm(h, 'model.norm.weight'), weight('lm_head.weight', [dim, vocab])]);
  // Shape bookkeeping up to the export's node count (chains of Identity on per-layer shapes).
  const left = nodes - b.graph.nodeCount;
  for (let i = 0; i < left; i++) padding[i % layers] = b.op('Identity', [padding[i % layers]!]);
  b.output(logits, 'float', ['batch', 'sequence', vocab]);
  for (const s of padding) b.output(s, 'int64', [3]);
  return { model: b.build(), dataBytes: offset, files };
}
