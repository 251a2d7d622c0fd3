/**
 * Builder-made models for the classes of third-party models in issue 10 that did not patch right:
 * token ids zeroed by the mask before the lookup, the older com.microsoft ATenOp embedding,
 * embedding_bag and one-hot MatMul lookups, an opset-6 export, and an encoder-decoder mask that
 * does not fit the decoder ids. All run on onnxruntime-node unless said otherwise.
 */
import { DataType, ModelBuilder, Tensor, type Dim, type Model, type Value } from '../src/graph/index.js';
import { randomFloats } from '../examples/models.js';

const table = (b: ModelBuilder, name: string, rows: number, dim: number, seed: number): Value =>
  b.initializer(name, Tensor.fromArray('float', [rows, dim], randomFloats(rows * dim, seed)));

export interface MaskedIdsOptions {
  /** `mul`: Gather(word, ids * mask); `mul-add`: Gather(word, ids * mask + token_type_ids) (one table for both, as some exporters fold them). */
  form?: 'mul' | 'mul-add';
  vocab?: number;
  dim?: number;
}

/**
 * BERT/RoBERTa shaped, as exporters that zero padded ids write it: the word lookup reads
 * `input_ids * attention_mask` (optionally `+ token_type_ids`), position ids are RoBERTa's
 * `cumsum(mask) * mask + padding_idx`, and a token-type table reads token_type_ids directly.
 */
export function buildMaskedIdsModel(options: MaskedIdsOptions = {}): Model {
  const { form = 'mul', vocab = 64, dim = 16 } = options;
  const b = new ModelBuilder({ opset: 17, irVersion: 8, graphName: 'masked_ids' });
  const ids = b.input('input_ids', 'int64', ['batch', 'sequence']);
  const mask = b.input('attention_mask', 'int64', ['batch', 'sequence']);
  const types = b.input('token_type_ids', 'int64', ['batch', 'sequence']);
  const word = table(b, 'embeddings.word_embeddings.weight', vocab, dim, 51);
  const position = table(b, 'embeddings.position_embeddings.weight', 40, dim, 52);
  const tokenType = table(b, 'embeddings.token_type_embeddings.weight', 2, dim, 53);
  const zeroed = b.op('Mul', [ids, mask], {}, { name: 'zero_padding' });
  const wordIds = form === 'mul-add' ? b.op('Add', [zeroed, types], {}, { name: 'add_types' }) : zeroed;
  const w = b.op('Gather', [word, wordIds], { axis: 0 }, { name: 'word_lookup', outputs: ['word_embeds'] });
  const cumsum = b.op('CumSum', [mask, b.constant('cumsum_axis', 'int64', [], [1])], {}, { name: 'position_cumsum' });
  const positions = b.op('Add', [b.op('Mul', [cumsum, mask]), b.constant('padding_idx', 'int64', [], [1])], {}, { name: 'position_ids' });
  const p = b.op('Gather', [position, positions], { axis: 0 }, { name: 'position_lookup' });
  const t = b.op('Gather', [tokenType, types], { axis: 0 }, { name: 'token_type_lookup' });
  b.output(b.op('Add', [b.op('Add', [w, p]), t], {}, { outputs: ['embeddings'] }), 'float', ['batch', 'sequence', dim]);
  return b.build();
}

/** Indices computed through a long chain of element-wise ops: `((((ids * mask) + 0) - 0) ...)`. */
export function buildDeepIdsChain(depth: number): Model {
  const b = new ModelBuilder({ opset: 17, irVersion: 8 });
  const ids = b.input('input_ids', 'int64', ['batch', 'sequence']);
  const mask = b.input('attention_mask', 'int64', ['batch', 'sequence']);
  const zero = b.constant('zero', 'int64', [], [0]);
  let v = b.op('Mul', [ids, mask]);
  for (let i = 0; i < depth; i++) v = b.op(i % 2 ? 'Sub' : 'Add', [v, zero]);
  const word = table(b, 'wte', 10, 4, 3);
  b.output(b.op('Gather', [word, v], { axis: 0 }, { name: 'wte_lookup' }), 'float', ['batch', 'sequence', 4]);
  return b.build();
}

/**
 * An ORTModule-era training graph: the lookup is com.microsoft `ATenOp` with `name = aten::embedding`
 * (weight, indices, padding_idx, scale_grad_by_freq, sparse), the table a graph input as in training
 * graphs; the backward is an `aten::embedding_backward` ATenOp. ONNX Runtime has no inference kernel
 * for ATenOp, so the whole model does not load.
 */
export function buildAtenOpModel(options: { vocab?: number; dim?: number; backward?: boolean } = {}): Model {
  const { vocab = 32, dim = 8, backward = true } = options;
  const b = new ModelBuilder({ opset: 14, irVersion: 7, opsets: { 'com.microsoft': 1 }, graphName: 'aten_op' });
  const ids = b.input('input_ids', 'int64', ['batch', 'sequence']);
  const weight = b.input('embed.weight', 'float', [vocab, dim]);
  const padding = b.constant('padding_idx', 'int64', [], [1]);
  const flag = b.constant('scale_grad_by_freq', 'bool', [], [0]);
  const sparse = b.constant('sparse', 'bool', [], [0]);
  const emb = b.op('ATenOp', [weight, ids, padding, flag, sparse], { name: 'aten::embedding' }, { name: 'embed_lookup', domain: 'com.microsoft', outputs: ['embed_output'] });
  const head = b.constant('head.weight', 'float', [dim, 4], randomFloats(dim * 4, 61));
  const logits = b.op('MatMul', [emb, head], {}, { outputs: ['logits'] });
  b.output(logits, 'float', ['batch', 'sequence', 4]);
  if (backward) {
    const grad = b.op('ATenOp', [b.op('Identity', [emb]), ids, b.constant('num_weights', 'int64', [], [vocab]), padding, flag, sparse],
      { name: 'aten::embedding_backward' }, { name: 'embed_backward', domain: 'com.microsoft', outputs: ['embed.weight_grad'] });
    b.output(grad, 'float', [vocab, dim]);
  }
  return b.build();
}

/** Lookups the patch does not take: ATen and ATenOp embedding_bag, and one-hot MatMuls (plain and behind a Cast). */
export function buildLookupFormsModel(): Model {
  const b = new ModelBuilder({ opset: 17, irVersion: 8, opsets: { 'com.microsoft': 1, 'org.pytorch.aten': 1 } });
  const ids = b.input('input_ids', 'int64', ['batch', 'sequence']);
  const flat = b.input('flat_ids', 'int64', ['tokens']);
  const offsets = b.input('offsets', 'int64', ['bags']);
  const bagTable = table(b, 'bag.weight', 20, 4, 71);
  const oneHotTable = table(b, 'onehot.weight', 20, 4, 72);
  const bag = b.node('ATen', [bagTable, flat, offsets], { operator: 'embedding_bag', overload_name: '' },
    { name: 'aten_embedding_bag', domain: 'org.pytorch.aten', outputCount: 4 })[0]!;
  const bagOld = b.node('ATenOp', [bagTable, flat, offsets], { name: 'aten::embedding_bag' },
    { name: 'atenop_embedding_bag', domain: 'com.microsoft', outputCount: 4 })[0]!;
  const depth = b.constant('depth', 'int64', [], [20]);
  const values = b.constant('onehot_values', 'int64', [2], [0, 1]);
  const valuesF = b.constant('onehot_values_f', 'float', [2], [0, 1]);
  const oneHotF = b.op('OneHot', [ids, depth, valuesF], { axis: -1 });
  const plain = b.op('MatMul', [oneHotF, oneHotTable], {}, { name: 'onehot_matmul' });
  const oneHotI = b.op('OneHot', [ids, depth, values], { axis: -1 });
  const cast = b.op('MatMul', [b.op('Cast', [oneHotI], { to: DataType.FLOAT }), oneHotTable], {}, { name: 'onehot_cast_matmul' });
  b.output(bag, 'float', ['bags', 4]);
  b.output(bagOld, 'float', ['bags', 4]);
  b.output(plain, 'float', ['batch', 'sequence', 4]);
  b.output(cast, 'float', ['batch', 'sequence', 4]);
  return b.build();
}

/** A PyTorch 0.3-era export: default-domain opset 6, IR 3, one token lookup. */
export function buildOpset6Model(): Model {
  const b = new ModelBuilder({ opset: 6, irVersion: 3, producerName: 'pytorch', producerVersion: '0.3' });
  const ids = b.input('input_ids', 'int64', ['batch', 'sequence']);
  const word = table(b, 'encoder.weight', 50, 8, 81);
  const emb = b.op('Gather', [word, ids], { axis: 0 }, { name: 'encoder_lookup', outputs: ['embeds'] });
  b.output(b.op('Relu', [emb], {}, { outputs: ['hidden'] }), 'float', ['batch', 'sequence', 8]);
  return b.build();
}

export interface DecoderOptions {
  idsDims?: Dim[];
  /** Declared dims of encoder_attention_mask; `null`: no shape declared. */
  maskDims?: Dim[] | null;
  /** Declared dims of position_ids (packed mode); absent: no position_ids input. */
  positionDims?: Dim[] | null;
  dim?: number;
}

/**
 * An encoder-decoder's decoder (as optimum exports it): decoder token ids `input_ids`
 * [batch, target_tokens], the encoder's FLOAT mask `encoder_attention_mask` [batch, source_tokens]
 * and its states [batch, source_tokens, d]. The mask belongs to the encoder states, not to the ids.
 */
export function buildDecoderModel(options: DecoderOptions = {}): Model {
  const { idsDims = ['batch', 'target_tokens'], maskDims = ['batch', 'source_tokens'], dim = 8 } = options;
  const b = new ModelBuilder({ opset: 17, irVersion: 8, graphName: 'decoder' });
  const ids = b.input('input_ids', 'int64', idsDims);
  const mask = maskDims === null ? inputWithoutShape(b, 'encoder_attention_mask') : b.input('encoder_attention_mask', 'float', maskDims);
  const states = b.input('encoder_hidden_states', 'float', ['batch', 'source_tokens', dim]);
  const word = table(b, 'decoder.embed_tokens.weight', 32, dim, 91);
  const emb = b.op('Gather', [word, ids], { axis: 0 }, { name: 'decoder_embed_tokens', outputs: ['decoder_embeds'] });
  let hidden = emb;
  if (options.positionDims !== undefined) {
    const positions = options.positionDims === null ? inputWithoutShape(b, 'position_ids', 'int64') : b.input('position_ids', 'int64', options.positionDims);
    const pos = b.op('Gather', [table(b, 'decoder.embed_positions.weight', 40, dim, 92), positions], { axis: 0 }, { name: 'decoder_embed_positions' });
    hidden = b.op('Add', [emb, pos]);
  }
  const maskAxes = b.constant('mask_axes', 'int64', [1], [2]);
  const masked = b.op('Mul', [states, b.op('Unsqueeze', [mask, maskAxes])]);
  const context = b.op('ReduceMean', [masked], { axes: [1], keepdims: 1 });
  b.output(b.op('Add', [hidden, context], {}, { outputs: ['hidden_states'] }), 'float', ['batch', 'target_tokens', dim]);
  return b.build();
}

function inputWithoutShape(b: ModelBuilder, name: string, type: string = 'float'): Value {
  return b.input(name, type);
}
