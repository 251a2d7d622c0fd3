/**
 * Training steps on the third-party models in ../shared/fixtures: the trainable ones are checked
 * (finite differences on sampled coordinates in a float64 copy, SGD steps lower the loss), the
 * others must be refused with the precise typed error. Also pins the SoftmaxCrossEntropyLoss
 * gradient rule the ORT training-API models need.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { DataType, ModelBuilder, Node, Tensor, Value, attr, decodeModel, makeAttribute, tensorType, type Model } from '../../src/graph/index.js';
import { buildTrainingStep, type TrainingStepOptions } from '../../src/training/step.js';
import { TrainingOptionError, UnsupportedGradientError } from '../../src/training/errors.js';
import { readModelFile } from '../../src/io/files.js';
import { fixturesDir, readFixture, skipWithoutFixtures } from '../helpers.js';
import { finiteDifferenceError, ort, values } from './helpers.js';
import { trainLosses } from './models.js';

/**
 * Float64 copy: float initializers, declared inputs/outputs, Constant tensors and Cast targets become
 * double; Erf (ONNX Runtime has no float64 kernel) runs in float32 between Casts.
 */
function toDouble(model: Model): Model {
  const g = model.graph;
  for (const v of g.initializers) {
    const t = v.initializer!;
    if (t.dataType === DataType.FLOAT) v.initializer = Tensor.fromArray(DataType.DOUBLE, t.dims, Float64Array.from(t.toArray() as Float32Array), v.name);
  }
  const declared = [...g.inputs, ...g.outputs, ...g.nodes.flatMap((n) => n.outputs.filter((o): o is Value => !!o))];
  for (const v of declared) if (v.elemType === DataType.FLOAT) v.info = { name: v.name, type: tensorType(DataType.DOUBLE, v.shape) };
  for (const n of g.nodes) {
    const t = n.attributeValue<unknown>('value');
    if (n.opType === 'Constant' && t instanceof Tensor && t.dataType === DataType.FLOAT) n.setAttribute('value', attr.tensor(Tensor.fromArray(DataType.DOUBLE, t.dims, Float64Array.from(t.toArray() as Float32Array))));
    if (n.opType === 'Cast' && n.attributeValue<number>('to') === DataType.FLOAT) n.setAttribute('to', attr.int(DataType.DOUBLE));
  }
  for (const n of [...g.nodes].filter((n) => n.opType === 'Erf')) {
    const x = n.input(0)!;
    const narrow = new Node('Cast', [x], [new Value(`${x.name}.f32`)], { attributes: [makeAttribute('to', attr.int(DataType.FLOAT))] });
    g.insertBefore(n, narrow);
    n.replaceInput(0, narrow.outputs[0]!);
    const y = n.outputs[0]!;
    const wide = new Node('Cast', [null], [new Value(`${y.name}.f64`)], { attributes: [makeAttribute('to', attr.int(DataType.DOUBLE))] });
    g.insertAfter(n, wide);
    y.replaceAllUsesWith(wide.outputs[0]!);
    wide.replaceInput(0, y);
  }
  return model;
}

/** Parameters that are graph inputs (training artifacts) get deterministic values, as a checkpoint would give them. */
function withValues(model: Model, names: readonly string[], scale = 0.05): Model {
  names.forEach((name, k) => {
    const v = model.graph.inputs.find((i) => i.name === name)!;
    const dims = v.shape as number[];
    const n = dims.reduce((p, q) => p * q, 1);
    model.graph.addInitializer(v, Tensor.fromArray(DataType.FLOAT, dims, Float32Array.from(values(n, 17 + k), (x) => x * scale), name));
  });
  return model;
}

const float = (dims: number[], seed: number) => new ort.Tensor('float64', Float64Array.from(values(dims.reduce((p, q) => p * q, 1), seed)), dims);

// ---------------------------------------------------------------- the rule

function sceModel(options: { reduction: 'mean' | 'sum' | 'none'; ignore?: number; weights?: boolean; logProb?: boolean; rank3?: boolean }): Model {
  const b = new ModelBuilder({ opset: 13, irVersion: 8 });
  const dims = options.rank3 ? [3, 4, 2] : [5, 4];
  const n = dims.reduce((p, q) => p * q, 1);
  const scores = b.op('Mul', [b.initializer('w', Tensor.fromArray('double', dims, values(n, 5))), b.constant('k', 'double', [], [3])]);
  const labelDims = options.rank3 ? [3, 2] : [5];
  const labels = b.constant('labels', 'int64', labelDims, options.rank3 ? [1, -1, 3, 0, 3, 2] : [1, 3, -1, 3, 0]);
  const inputs: (Value | null)[] = [scores, labels];
  if (options.weights) inputs.push(b.constant('class_weights', 'double', [4], [0.5, 2, 1, 3]));
  const attrs: Record<string, unknown> = { reduction: attr.string(options.reduction) };
  if (options.ignore !== undefined) attrs['ignore_index'] = options.ignore;
  const [loss, logProb] = b.node('SoftmaxCrossEntropyLoss', inputs, attrs as Record<string, number>, { outputCount: options.logProb ? 2 : 1 });
  let total = options.reduction === 'none' ? b.op('ReduceSum', [b.op('Mul', [loss!, loss!])], { keepdims: 0 }) : loss!;
  if (logProb) total = b.op('Add', [total, b.op('ReduceSum', [b.op('Mul', [logProb, logProb])], { keepdims: 0 })]);
  b.output(b.op('Identity', [total], {}, { outputs: ['loss'] }), 'double', []);
  return b.build();
}

for (const [label, o] of [
  ['mean, ignore_index -1', { reduction: 'mean', ignore: -1 }],
  ['sum, class weights, ignore_index -1', { reduction: 'sum', ignore: -1, weights: true }],
  ['mean, class weights, log_prob output also used', { reduction: 'mean', weights: true, logProb: true, ignore: -1 }],
  ['none, scores [N, C, d]', { reduction: 'none', rank3: true, ignore: -1 }],
] as const) {
  test(`SoftmaxCrossEntropyLoss gradient (${label}) matches finite differences`, { timeout: 30_000 }, async () => {
    const m = sceModel(o);
    const step = buildTrainingStep(m, { optimizer: 'sgd', gradients: true, loss: 'output:loss' });
    const { worst, where } = await finiteDifferenceError(m, step);
    assert.ok(worst < 1e-7, `worst relative error ${worst} at ${where}`);
  });
}

// ---------------------------------------------------------------- trainable fixtures

const MLP_PARAMS = ['fc1.weight', 'fc1.bias', 'fc2.weight', 'fc2.bias'];
const mlpData = (batch: number, dtype: 'float32' | 'float64') => ({
  'input-0': dtype === 'float64' ? float([batch, 784], 3) : new ort.Tensor('float32', Float32Array.from(values(batch * 784, 3)), [batch, 784]),
  labels: new ort.Tensor('int32', Int32Array.from({ length: batch }, (_, i) => (i * 3) % 10), [batch]),
});

for (const file of ['ort_trainapi_eval_model.onnx']) {
  test(`${file}: its loss output trains (SoftmaxCrossEntropyLoss, Gemm, Relu; parameters are graph inputs)`, { skip: skipWithoutFixtures, timeout: 60_000 }, async () => {
    const load = () => withValues(decodeModel(readFixture(file)), MLP_PARAMS);
    const options: TrainingStepOptions = { optimizer: 'sgd', params: MLP_PARAMS, loss: 'output:onnx::loss::21273' };
    const m = toDouble(load());
    const step = buildTrainingStep(m, { ...options, gradients: true });
    // The training artifact's own gradient ops (com.microsoft) are not on the forward loss path.
    assert.ok(!step.model.graph.nodes.some((n) => n.domain === 'com.microsoft' && n.outputs.some((o) => step.record.params.some((p) => p.grad === o?.name))));
    const { worst, where, checked } = await finiteDifferenceError(m, step, { samples: 5, extra: mlpData(4, 'float64') });
    assert.ok(checked >= 20 && worst < 1e-6, `worst relative error ${worst} at ${where} (${checked} coordinates)`);
    const seen = await trainLosses(load(), options, mlpData(4, 'float32'), 0.1, 5);
    assert.ok(seen[4]! < seen[0]! - 0.05, `loss went ${seen.map((x) => x.toFixed(4)).join(' -> ')}`);
  });
}

const int64 = (dims: number[], f: (i: number) => number) => new ort.Tensor('int64', BigInt64Array.from({ length: dims.reduce((p, q) => p * q, 1) }, (_, i) => BigInt(f(i))), dims);

test('optimum_tiny_distilbert.onnx (opset 11, logits [batch, 2]): sequence classification with labels:labels trains', { skip: skipWithoutFixtures, timeout: 120_000 }, async () => {
  const load = () => decodeModel(readFixture('optimum_tiny_distilbert.onnx'));
  const options: TrainingStepOptions = { optimizer: 'sgd', loss: 'labels:labels' };
  // Ids spread over the vocabulary, a padded position, one label ignored (-100).
  const data = { input_ids: int64([3, 5], (i) => (i * 7919) % 30522), attention_mask: int64([3, 5], (i) => (i === 14 ? 0 : 1)), labels: int64([3], (i) => [1, 0, -100][i]!) };
  const m = toDouble(load());
  const step = buildTrainingStep(m, { ...options, gradients: true });
  assert.equal(step.record.gatherGradient, 'onehot-matmul', 'opset 11: the portable Gather gradient');
  assert.deepEqual(step.record.inputs, ['input_ids', 'attention_mask', 'labels']);
  // Erf runs in float32 (see toDouble): a wider step keeps its rounding below the tolerance.
  const { worst, where, checked } = await finiteDifferenceError(m, step, { h: 1e-3, samples: 3, extra: data });
  assert.ok(checked >= 2 * step.record.params.length && worst < 2e-4, `worst relative error ${worst} at ${where} (${checked} coordinates)`);
  const seen = await trainLosses(load(), options, data, 0.5, 5);
  assert.ok(seen[4]! < seen[0]! - 1e-3, `loss went ${seen.map((x) => x.toFixed(5)).join(' -> ')}`);
  console.log(`# distilbert: ${step.record.params.length} parameters, ${checked} coordinates, worst ${worst.toExponential(2)}, ${step.record.runtimeShapeFallbacks} run-time shape fallbacks; loss ${seen.map((x) => x.toFixed(5)).join(' -> ')}`);
});

test('ort_bert_toy_optimized.onnx (opset 12, MLM head [batch, seq, 99]): the default causal-LM loss reads prediction_scores and SGD lowers it', { skip: skipWithoutFixtures, timeout: 120_000 }, async () => {
  const m = decodeModel(readFixture('ort_bert_toy_optimized.onnx'));
  const data = { input_ids: int64([2, 6], (i) => (i * 37) % 99), token_type_ids: int64([2, 6], (i) => (i % 6 < 3 ? 0 : 1)), input_mask: int64([2, 6], (i) => (i === 11 ? 0 : 1)) };
  const step = buildTrainingStep(m, { optimizer: 'sgd' });
  // prediction_scores ends in the word table's 99 rows; seq_relationship_score [batch, 2] is not token logits.
  assert.ok(step.model.graph.nodes.some((n) => n.opType === 'LogSoftmax' && n.input(0)?.producer?.input(0)?.name === 'prediction_scores'));
  const seen = await trainLosses(m, { optimizer: 'sgd' }, data, 0.5, 5);
  assert.ok(seen.every(Number.isFinite) && seen[4]! < seen[0]! - 0.05, `loss went ${seen.map((x) => x.toFixed(4)).join(' -> ')}`);
});

test('ort_trainapi_training_model.onnx: dead com.microsoft gradient nodes are pruned, unread inputs dropped, and the step runs and lowers the loss', { skip: skipWithoutFixtures, timeout: 60_000 }, async () => {
  const options: TrainingStepOptions = { optimizer: 'sgd', params: MLP_PARAMS, loss: 'output:onnx::loss::21273' };
  const load = () => withValues(decodeModel(readFixture('ort_trainapi_training_model.onnx')), MLP_PARAMS);
  const step = buildTrainingStep(load(), options);
  assert.deepEqual(step.model.graph.nodes.filter((n) => n.domain === 'com.microsoft').map((n) => n.opType), []);
  assert.deepEqual(step.record.inputs, ['input-0', 'labels']);
  assert.deepEqual(step.record.droppedInputs, [...MLP_PARAMS.map((p) => `${p}_grad.accumulation.buffer`), 'lazy_reset_grad']);
  assert.deepEqual(step.model.graph.inputs.filter((v) => step.record.droppedInputs.includes(v.name)), []);
  const seen = await trainLosses(load(), options, mlpData(4, 'float32'), 0.1, 5);
  assert.ok(seen[4]! < seen[0]! - 0.05, `loss went ${seen.map((x) => x.toFixed(4)).join(' -> ')}`);
});

// ---------------------------------------------------------------- refused fixtures

test('genai_tiny_llama_fp16_extdata.onnx (with model.onnx.data): refused, listing every com.microsoft fused op on the path', { skip: skipWithoutFixtures, timeout: 30_000 }, () => {
  const loaded = readModelFile(path.join(fixturesDir, 'genai_tiny_llama_fp16_extdata.onnx'));
  try {
    assert.ok(loaded.externalData.every((f) => f.present), 'model.onnx.data is beside the model');
    let error: unknown;
    try { buildTrainingStep(loaded.model, { optimizer: 'sgd' }); } catch (e) { error = e; }
    assert.ok(error instanceof UnsupportedGradientError, String(error));
    const ops = [...new Set(error.ops.map((o) => o.op))].sort();
    assert.deepEqual(ops, ['SimplifiedLayerNormalization', 'com.microsoft::MultiHeadAttention', 'com.microsoft::RotaryEmbedding', 'com.microsoft::SkipSimplifiedLayerNormalization']);
    assert.ok(error.ops.every((o) => o.why === 'no gradient rule' && o.node !== ''));
    assert.match(error.message, /nothing was built/);
  } finally {
    loaded.close();
  }
});

/** Fixture -> the error buildTrainingStep (default options) must give, and a pattern of its message. */
const REFUSED: Array<[string, typeof TrainingOptionError | typeof UnsupportedGradientError, RegExp]> = [
  // Sequence classification: trained above with labels:NAME; the causal-LM default finds no token logits.
  ['optimum_tiny_distilbert.onnx', TrainingOptionError, /causal-LM loss needs logits .*it has no rank-3 float output\. Choose the loss with loss: .*"labels:NAME"/],
  // Opset 11 is supported now; its only rank-3 output is hidden states [.., 4], not logits over the 20-row vocabulary.
  ['ort_gpt2_past.onnx', TrainingOptionError, /no rank-3 output ends in the vocabulary size \(the token-embedding table has 20 rows; candidates: last_state \[batch_size, 1, 4\]\)/],
  ['ort_keras_voice_commands.onnx', TrainingOptionError, /No loss to train/],
  ['ort_embed_layer_norm_format3.onnx', TrainingOptionError, /no rank-3 output ends in the vocabulary size .*candidates: add2_out \[batch, 3, 4\]/],
  ['ort_embed_layer_norm_format5.onnx', TrainingOptionError, /no rank-3 output ends in the vocabulary size .*candidates: add2_out/],
  ['ort_embed_layer_norm_format9.onnx', TrainingOptionError, /no rank-3 output ends in the vocabulary size .*candidates: add3_out/],
  ['ort_embed_layer_norm_multiple.onnx', TrainingOptionError, /No loss to train: .*"input_ids" graph input/],
  ['ort_tiny_gpt2_beamsearch_fp16.onnx', TrainingOptionError, /No loss to train/],
  // Root causes only: the MatMuls whose operand ranks are unknown because of the fused ops are not listed.
  ['genai_tiny_qwen35_decoder_fp16.onnx', UnsupportedGradientError, /^Cannot differentiate loss "loss": 6 nodes .*com\.microsoft::GroupQueryAttention "GQA_0" \(no gradient rule\); com\.microsoft::SkipLayerNormalization "SkipLayerNorm_0" \(no gradient rule\);(?!.*MatMul)/],
  ['ort_dummy_t5_beamsearch.onnx', TrainingOptionError, /No loss to train/],
  ['ort_trainapi_adamw_optimizer.onnx', TrainingOptionError, /No loss to train/],
  ['ort_bloom3_ortmodule_training.onnx', TrainingOptionError, /No loss to train/],
  ['tract_gather_block_quantized_int4.onnx', TrainingOptionError, /No loss to train/],
  ['ov_gather_block_quantized_uint8_bits4_zp.onnx', TrainingOptionError, /No loss to train/],
  // Its only rank-3 output is the embeddings [batch, seq, 8], not logits over the 16-row table.
  ['genai_pipeline_embeds_only.onnx', TrainingOptionError, /no rank-3 output ends in the vocabulary size \(the token-embedding table has 16 rows; candidates: \/model\/embed_tokens\/Gather\/output_0 \[batch, seq, 8\]\)\. Choose the loss with loss: "output:NAME"/],
];

test('fixtures that cannot be trained as they are get the precise typed error', { skip: skipWithoutFixtures, timeout: 30_000 }, () => {
  const seen: string[] = [];
  for (const [file, kind, pattern] of REFUSED) {
    let error: unknown;
    try { buildTrainingStep(decodeModel(readFixture(file)), { optimizer: 'sgd' }); } catch (e) { error = e; }
    seen.push(`${file}: ${error instanceof Error ? `${error.name}: ${error.message.slice(0, 200)}` : 'built'}`);
    assert.ok(error instanceof kind && (error as TrainingOptionError).code === 'BAD_OPTION' && pattern.test(error.message), seen[seen.length - 1]);
  }
});
