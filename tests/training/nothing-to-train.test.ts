/**
 * A model with a scalar float output that nothing trainable reaches (weights fed as graph inputs):
 * every loss choice reports that cause, naming the inputs that reach the loss and the params option,
 * never "no scalar float output".
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { buildTrainingStep, TrainingOptionError } from '../../src/training/index.js';
import { ModelBuilder } from '../../src/graph/index.js';
import { buildTinyTrainingGraph } from '../../examples/models.js';

const inputsNamed = /nothing to train\. Float graph inputs that reach it: "target", "embedding\.weight", "head\.weight"; if some are weights, name them in --param to train them/;

test('tiny-training (weights as graph inputs): each loss choice names the real cause, the candidates and params', () => {
  for (const loss of ['auto', 'output:loss', 'causal-lm', 'causal-lm:labels'] as const) {
    assert.throws(() => buildTrainingStep(buildTinyTrainingGraph(), { optimizer: 'adamw', loss }), (e: unknown) => {
      assert.ok(e instanceof TrainingOptionError, String(e));
      const text = e.describe((o) => (o === 'params' ? '--param' : o));
      assert.doesNotMatch(text, /no scalar float output/, loss);
      assert.match(text, /No float initializer reaches loss "loss" through differentiable ops/, loss);
      assert.match(text, inputsNamed, loss);
      if (loss.startsWith('causal-lm')) assert.match(text, /it has no rank-3 float output\. The model's scalar float output "loss" cannot be the loss either/, loss);
      return true;
    }, loss);
  }
});

test('a trainable scalar output is offered when the chosen cross-entropy finds no logits', () => {
  const b = new ModelBuilder({ opset: 17, irVersion: 8, graphName: 'scored' });
  const x = b.input('x', 'float', [2, 3]);
  const w = b.constant('w', 'float', [3], [0.1, 0.2, 0.3]);
  b.output(b.op('ReduceSum', [b.op('Mul', [x, w])], { keepdims: 0 }, { outputs: ['score'] }), 'float', []);
  assert.throws(() => buildTrainingStep(b.build(), { optimizer: 'sgd', loss: 'causal-lm:labels' }),
    /^TrainingOptionError: No loss to train: causal-lm:labels loss needs logits .*it has no rank-3 float output\. The model has a scalar float output "score": loss "output:score" trains against it\.$/);
});
