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
