/**
 * One small causal LM in two forms for the ORT-web 1.19.2 comparison (bench/train-ort119.ts):
 *
 * - `buildOrtLmForward`: a forward model (input_ids -> logits [B, L, V], weights as initializers) for
 *   buildTrainingStep + Trainer;
 * - `writeOrtLmArtifacts`: the same forward as ORT training artifacts, laid out as ORT's artifact
 *   generator lays them out (see tests/training-artifacts/build.ts, whose checkpoint writer and file
 *   names this reuses), the backward written by hand in ORT's training-only gradient ops
 *   (SoftmaxCrossEntropyLossGrad, FusedMatMul, ReluGrad, LayerNormalizationGrad, GatherGrad) and
 *   one com.microsoft AdamWOptimizer.
 *
 * Model: e = wte[ids]; x = LayerNorm(e); h = e + (Relu(x W1 + b1) W2 + b2); logits = h Wh (untied
 * head). Tokens are flattened to [B*L] first, so every activation is 2-D and the backward needs no
 * batch-axis reductions. Loss: mean next-token cross-entropy; the artifacts take the shifted labels
 * as an input (last position -100, ignored), the step graph shifts input_ids itself.
 */
import { writeFileSync, mkdirSync } from 'node:fs';
import path from 'node:path';
import { ModelBuilder, Tensor, Value, attr, encodeModel, tensorType, type Model } from '../src/graph/index.js';
import { randomFloats } from '../examples/models.js';
import { ARTIFACT_FILES, encodeCheckpoint, type ArtifactParameter } from '../tests/training-artifacts/build.js';

export interface OrtLmShape { vocab: number; dim: number; hidden: number }

export const IGNORE_INDEX = -100;
const EPSILON = 1e-5;
const MS = { domain: 'com.microsoft' } as const;

/** Initial values, in the order the training model takes them (= getContiguousParameters' order). */
export function ortLmParameters({ vocab, dim, hidden }: OrtLmShape): ArtifactParameter[] {
  const p = (name: string, dims: number[], seed: number, scale = 0.02): ArtifactParameter =>
    ({ name, dims, values: randomFloats(dims.reduce((a, c) => a * c, 1), seed, scale) });
  const filled = (name: string, n: number, value: number): ArtifactParameter => ({ name, dims: [n], values: new Float32Array(n).fill(value) });
  return [
    p('wte.weight', [vocab, dim], 301),
    filled('ln.weight', dim, 1),
    filled('ln.bias', dim, 0),
    p('fc.weight', [dim, hidden], 302),
    p('fc.bias', [hidden], 303),
    p('proj.weight', [hidden, dim], 304),
    p('proj.bias', [dim], 305),
    p('head.weight', [dim, vocab], 306),
  ];
}

interface Forward {
  ids: Value; flatIds: Value; params: Record<string, Value>;
  e: Value; mean: Value; invStd: Value; x: Value; a: Value; r: Value; h: Value; logits: Value;
}

/** The forward to flat logits [B*L, V]; parameters come from `param` (initializers or graph inputs). */
function forward(b: ModelBuilder, shape: OrtLmShape, param: (p: ArtifactParameter) => Value): Forward {
  const ids = b.input('input_ids', 'int64', ['batch', 'sequence']);
  const params = Object.fromEntries(ortLmParameters(shape).map((p) => [p.name, param(p)]));
  const w = (n: string) => params[n]!;
  const flatIds = b.op('Reshape', [ids, b.constant('flat', 'int64', [1], [-1])]);
  const e = b.op('Gather', [w('wte.weight'), flatIds], { axis: 0 }, { name: 'wte_lookup', outputs: ['inputs_embeds'] });
  const ln = b.node('LayerNormalization', [e, w('ln.weight'), w('ln.bias')], { axis: -1, epsilon: attr.float(EPSILON) }, { outputs: ['ln_out', 'ln_mean', 'ln_inv_std'] });
  const [x, mean, invStd] = ln as [Value, Value, Value];
  const a = b.op('Add', [b.op('MatMul', [x, w('fc.weight')]), w('fc.bias')]);
  const r = b.op('Relu', [a]);
  const h = b.op('Add', [e, b.op('Add', [b.op('MatMul', [r, w('proj.weight')]), w('proj.bias')])]);
  const logits = b.op('MatMul', [h, w('head.weight')]);
  return { ids, flatIds, params, e, mean, invStd, x, a, r, h, logits };
}

/** Forward model for the step graph: logits [B, L, V]. */
export function buildOrtLmForward(shape: OrtLmShape): Model {
  const b = new ModelBuilder({ opset: 17, irVersion: 8, graphName: 'ort119_lm' });
  const f = forward(b, shape, (p) => b.initializer(p.name, Tensor.fromArray('float', p.dims, p.values)));
  const dims = b.op('Concat', [b.op('Shape', [f.ids]), b.constant('vocab', 'int64', [1], [shape.vocab])], { axis: 0 });
  b.output(b.op('Reshape', [f.logits, dims], {}, { outputs: ['logits'] }), 'float', ['batch', 'sequence', shape.vocab]);
  return b.build();
}

const artifactOptions = (graphName: string) =>
  ({ opset: 17, irVersion: 8, opsets: { 'com.microsoft': 1 }, graphName, producerName: 'onnx-neftune bench' });

function lossOf(b: ModelBuilder, f: Forward): { labels: Value; loss: Value; logProb: Value } {
  const labels = b.input('labels', 'int64', ['batch', 'sequence']);
  const flatLabels = b.op('Reshape', [labels, b.constant('flat_labels', 'int64', [1], [-1])]);
  const [loss, logProb] = b.node('SoftmaxCrossEntropyLoss', [f.logits, flatLabels], { reduction: 'mean', ignore_index: IGNORE_INDEX }, { outputs: ['loss', 'log_prob'] }) as [Value, Value];
  return { labels: flatLabels, loss, logProb };
}

/** training_model.onnx: forward, backward in ORT's gradient ops, gradients accumulated in place. */
export function buildOrtLmTrainingModel(shape: OrtLmShape): Model {
  const b = new ModelBuilder(artifactOptions('training_model'));
  const f = forward(b, shape, (p) => b.input(p.name, 'float', p.dims));
  const { labels, loss, logProb } = lossOf(b, f);
  const names = ortLmParameters(shape);
  const buffers = names.map((p) => b.input(`${p.name}_grad.accumulation.buffer`, 'float', p.dims));
  const reset = b.input('lazy_reset_grad', 'bool', [1]);
  const w = (n: string) => f.params[n]!;
  const mm = (x: Value, y: Value, transA: number, transB: number, output?: string) =>
    b.op('FusedMatMul', [x, y], { transA, transB, alpha: attr.float(1) }, { ...MS, ...(output ? { outputs: [output] } : {}) });
  const rowSum = (x: Value, output: string) => b.op('ReduceSum', [x, b.constant(`${output}_axes`, 'int64', [1], [0])], { keepdims: 0 }, { outputs: [output] });

  const seed = b.constant('loss_grad', 'float', [], [1]);
  const dLogits = b.op('SoftmaxCrossEntropyLossGrad', [seed, logProb, labels], { reduction: 'mean', ignore_index: IGNORE_INDEX }, { ...MS, outputs: ['logits_grad'] });
  const grads: Record<string, Value> = {};
  grads['head.weight'] = mm(f.h, dLogits, 1, 0, 'head.weight_grad');
  const dh = mm(dLogits, w('head.weight'), 0, 1);
  grads['proj.bias'] = rowSum(dh, 'proj.bias_grad');
  grads['proj.weight'] = mm(f.r, dh, 1, 0, 'proj.weight_grad');
  const da = b.op('ReluGrad', [mm(dh, w('proj.weight'), 0, 1), f.a], {}, MS);
  grads['fc.bias'] = rowSum(da, 'fc.bias_grad');
  grads['fc.weight'] = mm(f.x, da, 1, 0, 'fc.weight_grad');
  const dx = mm(da, w('fc.weight'), 0, 1);
  const [deNorm, dScale, dBias] = b.node('LayerNormalizationGrad', [dx, f.e, w('ln.weight'), f.mean, f.invStd], { axis: -1, epsilon: attr.float(EPSILON) },
    { ...MS, outputs: ['inputs_embeds_norm_grad', 'ln.weight_grad', 'ln.bias_grad'] }) as [Value, Value, Value];
  grads['ln.weight'] = dScale;
  grads['ln.bias'] = dBias;
  const de = b.op('Add', [dh, deNorm], {}, { outputs: ['inputs_embeds_grad'] });
  grads['wte.weight'] = b.op('GatherGrad', [b.op('Shape', [w('wte.weight')]), f.flatIds, de], { axis: 0 }, { ...MS, outputs: ['wte.weight_grad'] });

  b.output(loss, 'float', []);
  for (const [i, p] of names.entries()) {
    const flag = b.op('InPlaceAccumulatorV2', [buffers[i]!, grads[p.name]!, reset], {}, { ...MS, outputs: [`${p.name}_grad.accumulation.out`] });
    b.output(flag, 'bool');
  }
  return b.build();
}

export function buildOrtLmEvalModel(shape: OrtLmShape): Model {
  const b = new ModelBuilder(artifactOptions('eval_model'));
  const f = forward(b, shape, (p) => b.input(p.name, 'float', p.dims));
  b.output(lossOf(b, f).loss, 'float', []);
  return b.build();
}

/**
 * optimizer_model.onnx: one AdamWOptimizer (PyTorch AdamW: adam_mode 0, bias correction, decay 0.01)
 * updating the parameter and moment sequences in place; the learning rate is the runtime's 0.001.
 */
export function buildOrtLmOptimizerModel(): Model {
  const b = new ModelBuilder(artifactOptions('optimizer_model'));
  const lr = b.input('learning_rate', 'float', [1]);
  const step = b.input('step', 'int64', [1]);
  const sequence = (name: string): Value => {
    const v = b.input(name, 'float');
    v.info = { name, type: { sequence_type: { elem_type: tensorType('float') } } };
    return v;
  };
  const inputs = ['params', 'gradients', 'first_order_moments', 'second_order_moments'].map(sequence);
  const done = b.op('AdamWOptimizer', [lr, step, ...inputs], {
    alpha: attr.float(0.9), beta: attr.float(0.999), epsilon: attr.float(1e-8), weight_decay: attr.float(0.01), adam_mode: 0, correct_bias: 1,
  }, { ...MS, outputs: ['updated_flag'] });
  b.output(done, 'bool');
  return b.build();
}

/** Writes the four artifact files into `dir`. */
export function writeOrtLmArtifacts(dir: string, shape: OrtLmShape): void {
  mkdirSync(dir, { recursive: true });
  writeFileSync(path.join(dir, ARTIFACT_FILES.training), encodeModel(buildOrtLmTrainingModel(shape)));
  writeFileSync(path.join(dir, ARTIFACT_FILES.eval), encodeModel(buildOrtLmEvalModel(shape)));
  writeFileSync(path.join(dir, ARTIFACT_FILES.optimizer), encodeModel(buildOrtLmOptimizerModel()));
  writeFileSync(path.join(dir, ARTIFACT_FILES.checkpoint), encodeCheckpoint(ortLmParameters(shape)));
}
