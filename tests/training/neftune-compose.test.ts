/**
 * NEFTune composes with training steps on the builder BERT and Gemma-style decoder (float64):
 * patch (runPass) then build the step. Alpha 0 is bit-identical to the unpatched step; alpha 5
 * gives the gradients of the unpatched model fed the same noisy embedding; alpha as a graph input
 * anneals the noise through the step; and patching a step built from the unpatched graph gives
 * the same results as patch-then-step (same seed, so both sessions draw the same noise).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { DataType, Node, Value, tensorType, type Model } from '../../src/graph/index.js';
import { neftunePass, runPass, type NeftuneOptions } from '../../src/passes/index.js';
import { buildTrainingStep, type TrainingStep, type TrainingStepOptions } from '../../src/training/step.js';
import { bertFeeds, buildBert, buildDecoder, decoderFeeds, trainableParams } from './models.js';
import { ort, session, stepFeeds } from './helpers.js';

interface Case { name: string; build: () => Model; feeds: () => Record<string, ort.Tensor>; options: (m: Model) => TrainingStepOptions; dims: [number, number, number];
  /** Gradient agreement at alpha 5: BERT's erf runs in float32, so a 1-ulp float64 difference in the embedding can move it by a float32 rounding. */
  tolerance: number;
}
const CASES: Case[] = [
  { name: 'BERT', build: () => buildBert(), feeds: () => bertFeeds(), options: () => ({ optimizer: 'sgd', momentum: 0.9, gradients: true }), dims: [2, 6, 16], tolerance: 1e-5 },
  { name: 'Gemma-style decoder', build: () => buildDecoder(), feeds: () => decoderFeeds(), options: (m) => ({ optimizer: 'adamw', params: trainableParams(m), gradients: true }), dims: [2, 6, 16], tolerance: 1e-9 },
];
const LOOKUP = 'inputs_embeds';
const CLEAN = `neftune__${LOOKUP}__clean`;
const alphaFeed = (a: number) => ({ neftune_alpha: new ort.Tensor('float32', Float32Array.from([a]), []) });
const patch = (m: Model, options: NeftuneOptions = {}) => { runPass(neftunePass, m, { alphaInput: true, ...options }); return m; };

async function runStep(source: Model, step: TrainingStep, data: Record<string, ort.Tensor>): Promise<Record<string, ort.Tensor>> {
  const s = await session(step.model);
  const out = await s.run(stepFeeds(source, step, 0.05, data));
  await s.release();
  return out;
}
/** Names of every step output the record lists: loss, updated parameters and state, gradients. */
const recorded = (step: TrainingStep) => [step.record.loss, ...step.record.params.flatMap((p) => [p.output, p.grad!]), ...step.record.state.map((s) => s.output)];
const bytes = (t: ort.Tensor) => Buffer.from((t.data as Float64Array).buffer, (t.data as Float64Array).byteOffset, (t.data as Float64Array).byteLength);

for (const c of CASES) {
  test(`${c.name}: alpha 0 is bit-identical to the unpatched step (loss, every .new output, gradients)`, { timeout: 60_000 }, async () => {
    const plain = c.build();
    const plainStep = buildTrainingStep(plain, c.options(plain));
    const patched = patch(c.build());
    const patchedStep = buildTrainingStep(patched, c.options(patched));
    assert.ok(patchedStep.model.graph.nodes.some((n) => n.opType === 'RandomUniformLike'), 'the step carries the noise');
    const a = await runStep(plain, plainStep, c.feeds());
    const b = await runStep(patched, patchedStep, { ...c.feeds(), ...alphaFeed(0) });
    const names = recorded(plainStep);
    assert.ok(names.length > 20);
    for (const name of names) assert.ok(bytes(a[name]!).equals(bytes(b[name]!)), `${name} differs at alpha 0`);
  });

  test(`${c.name}: at alpha 5 the gradients equal those of the unpatched model fed the same noisy embedding`, { timeout: 60_000 }, async () => {
    const patched = patch(c.build());
    const step = buildTrainingStep(patched, { ...c.options(patched), extraOutputs: [LOOKUP, CLEAN] });
    const out = await runStep(patched, step, { ...c.feeds(), ...alphaFeed(5) });
    const noisy = out[`${LOOKUP}.out`]!.data as Float64Array, clean = out[`${CLEAN}.out`]!.data as Float64Array;
    const noise = Float64Array.from(noisy, (v, i) => v - clean[i]!);
    assert.ok(noise.some((v) => v !== 0), 'alpha 5 adds noise');

    // Reference: the unpatched model with `noise` added to the lookup's output as a graph input.
    const reference = c.build();
    const lookup = reference.graph.value(LOOKUP)!;
    const noiseInput = reference.graph.addInput(new Value('noise'));
    noiseInput.info = { name: 'noise', type: tensorType(DataType.DOUBLE, c.dims) };
    const add = new Node('Add', [lookup, noiseInput], [new Value('inputs_embeds_noisy')], { name: 'add_noise' });
    lookup.replaceAllUsesWith(add.outputs[0]!, { except: [add] });
    reference.graph.insertAfter(lookup.producer!, add);
    const refStep = buildTrainingStep(reference, c.options(reference));
    const r = await runStep(reference, refStep, { ...c.feeds(), noise: new ort.Tensor('float64', noise, c.dims) });
    const plainOut = await runStep(reference, refStep, { ...c.feeds(), noise: new ort.Tensor('float64', new Float64Array(noise.length), c.dims) });
    let changed = 0;
    for (const p of refStep.record.params) {
      const got = out[p.grad!]!.data as Float64Array, want = r[p.grad!]!.data as Float64Array, without = plainOut[p.grad!]!.data as Float64Array;
      let worst = 0;
      want.forEach((w, i) => { worst = Math.max(worst, Math.abs(got[i]! - w) / (1e-6 + Math.abs(w))); });
      assert.ok(worst < c.tolerance, `${p.grad}: worst relative difference ${worst}`);
      if (want.some((w, i) => Math.abs(w - without[i]!) > 1e-9 * (1 + Math.abs(w)))) changed++;
    }
    assert.ok(changed >= refStep.record.params.length / 2, `the noise changed ${changed} of ${refStep.record.params.length} gradients`);
  });

  test(`${c.name}: alpha as a graph input anneals the noise through the step`, { timeout: 60_000 }, async () => {
    const patched = patch(c.build(), { seed: 3 });
    const step = buildTrainingStep(patched, { ...c.options(patched), extraOutputs: [LOOKUP, CLEAN] });
    const s = await session(step.model);
    const [, seq, dim] = c.dims;
    const losses: number[] = [];
    for (const alpha of [5, 1, 0]) {
      const out = await s.run(stepFeeds(patched, step, 0.05, { ...c.feeds(), ...alphaFeed(alpha) }));
      const noisy = out[`${LOOKUP}.out`]!.data as Float64Array, clean = out[`${CLEAN}.out`]!.data as Float64Array;
      const largest = noisy.reduce((m, v, i) => Math.max(m, Math.abs(v - clean[i]!)), 0);
      const bound = alpha / Math.sqrt(seq * dim);
      // U(-1, 1) * alpha / sqrt(L d): the largest of 192 draws comes within 10% of the bound.
      assert.ok(largest <= bound * (1 + 1e-6) && largest >= 0.9 * bound, `alpha ${alpha}: largest noise ${largest}, bound ${bound}`);
      losses.push(Number((out[step.record.loss]!.data as Float64Array)[0]));
      for (const p of step.record.params) assert.ok((out[p.grad!]!.data as Float64Array).every(Number.isFinite), `${p.grad} finite at alpha ${alpha}`);
    }
    assert.notEqual(losses[0], losses[2]);
    await s.release();
  });

  test(`${c.name}: a step built from the unpatched graph and patched afterwards equals patch-then-step (same seed)`, { timeout: 60_000 }, async () => {
    const options: NeftuneOptions = { seed: 11 };
    const first = patch(c.build(), options);
    const patchThenStep = buildTrainingStep(first, c.options(first));
    const plain = c.build();
    const stepThenPatch = buildTrainingStep(plain, c.options(plain));
    patch(stepThenPatch.model, options);
    assert.equal(stepThenPatch.model.graph.nodes.filter((n) => n.opType === 'RandomUniformLike').length, 1, 'one lookup patched in the step graph');
    const data = { ...c.feeds(), ...alphaFeed(5) };
    const a = await runStep(first, patchThenStep, data);
    const b = await runStep(plain, stepThenPatch, data);
    const reference = await runStep(plain, stepThenPatch, { ...c.feeds(), ...alphaFeed(0) });
    for (const name of recorded(patchThenStep)) {
      assert.ok(bytes(a[name]!).equals(bytes(b[name]!)), `${name} differs between patch-then-step and step-then-patch`);
    }
    assert.ok(!bytes(a[patchThenStep.record.loss]!).equals(bytes(reference[patchThenStep.record.loss]!)), 'the noise changed the loss');
  });
}
