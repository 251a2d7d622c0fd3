/**
 * NEFTune noise measured on ONNX Runtime: bounds, zero mean, variance s^2/3, fresh per run,
 * reproducible with a seed, exactly zero with alpha 0; mask/packed against the formula.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { decodeModel, encodeModel, type Model, type Value } from '../src/graph/index.js';
import { applyNeftune, type NeftuneOptions } from '../src/passes/index.js';
import { checkUniformNoise } from '../src/verify/stats.js';
import { buildTinyBert, buildTinyGemma, buildTinyGpt, buildTinyT5, type FloatType, type TinyModelOptions } from '../examples/models.js';
import { asNumbers, feedsFor, floatScalar, ort, sessionFor } from './ort-helpers.js';

const B = 4, L = 16, D = 32, V = 64, ALPHA = 5;
const clone = (m: Model) => decodeModel(encodeModel(m));
/** Rounding allowance for noise added in fp16/bf16 (half an ulp of the result, generously). */
const ulpFactor: Record<FloatType, number> = { float: 0, float16: 2 ** -10, bfloat16: 2 ** -7 };

type Builder = (o: TinyModelOptions) => Model;
const shapes: Array<{ kind: string; build: Builder; outputs: string[]; options?: NeftuneOptions; amplification?: number }> = [
  { kind: 'gpt', build: buildTinyGpt, outputs: ['inputs_embeds'] },
  { kind: 'bert', build: buildTinyBert, outputs: ['word_embeds'] },
  { kind: 't5', build: buildTinyT5, outputs: ['encoder_embeds', 'decoder_embeds'] },
  { kind: 'gemma (noise after the sqrt(d) scale)', build: buildTinyGemma, outputs: ['scaled_embeds'], options: { afterScale: true } },
  { kind: 'gemma (noise before the scale, amplified)', build: buildTinyGemma, outputs: ['scaled_embeds'], amplification: Math.sqrt(D) },
];

const outputName = (name: string, dtype: FloatType, kind: string) => (dtype === 'float' || kind.startsWith('gemma') ? name : `${name}_float`);

for (const { kind, build, outputs, options, amplification = 1 } of shapes) {
  for (const dtype of ['float', 'float16', 'bfloat16'] as const) {
    test(`${kind} ${dtype}: noise is U(-s, s) with s = alpha/sqrt(L*d), fresh per run, zero at alpha 0`, async () => {
      const base = build({ dtype, dim: D, vocab: V, exposeEmbeddings: true });
      const patched = clone(base);
      const result = applyNeftune(patched, { alphaInput: true, ...options });
      assert.ok(result.record.sites.every((s) => s.role === 'token'), 'only the token table is patched by default');
      assert.equal(result.record.sites.length, outputs.length, 'a shared table is noised at every read');
      const clean = await sessionFor(base);
      const noisy = await sessionFor(patched);
      // Two shapes through the same sessions: L*d is computed at run time, so the scale follows L.
      for (const [batch, seq] of [[B, L], [3, 7]] as const) {
        const { feeds } = feedsFor(clean, batch, seq, V);
        const reference = await clean.run(feeds);
        const run1 = await noisy.run({ ...feeds, neftune_alpha: floatScalar(ALPHA) });
        const run2 = await noisy.run({ ...feeds, neftune_alpha: floatScalar(ALPHA) });
        const zero = await noisy.run({ ...feeds, neftune_alpha: floatScalar(0) });
        const scale = (ALPHA / Math.sqrt(seq * D)) * amplification;
        for (const out of outputs) {
          const name = outputName(out, dtype, kind);
          const e = asNumbers(reference[name]!);
          const n1 = asNumbers(run1[name]!);
          const diff = n1.map((x, i) => x - e[i]!);
          const tolerance = e.map((x) => (Math.abs(x) + scale) * ulpFactor[dtype] * amplification);
          const check = checkUniformNoise(diff, scale, { tolerance });
          assert.ok(check.ok, `${name} [${batch}, ${seq}]: ${check.failures.join('; ')}`);
          assert.ok(check.count === batch * seq * D);
          assert.notDeepEqual(asNumbers(run2[name]!), n1, `${name}: every run draws new noise`);
          assert.deepEqual(asNumbers(zero[name]!), e, `${name}: alpha 0 gives exactly the clean embedding`);
        }
        for (const name of clean.outputNames) {
          assert.deepEqual(asNumbers(zero[name]!), asNumbers(reference[name]!), `alpha 0: ${name} unchanged bit for bit`);
        }
      }
      await Promise.all([clean.release(), noisy.release()]);
    });
  }
}

test('with a seed, noise repeats across sessions; without one it differs between seeds', async () => {
  const base = buildTinyGpt({ dim: D, vocab: V, exposeEmbeddings: true });
  const seeded = (seed: number) => { const m = clone(base); applyNeftune(m, { seed }); return m; };
  const [a, b, c] = await Promise.all([sessionFor(seeded(42)), sessionFor(seeded(42)), sessionFor(seeded(7))]);
  const { feeds } = feedsFor(a, B, L, V);
  const [ra, rb, rc] = [await a.run(feeds), await b.run(feeds), await c.run(feeds)];
  assert.deepEqual(asNumbers(ra['inputs_embeds']!), asNumbers(rb['inputs_embeds']!));
  assert.notDeepEqual(asNumbers(ra['inputs_embeds']!), asNumbers(rc['inputs_embeds']!));
  const ra2 = await a.run(feeds);
  assert.notDeepEqual(asNumbers(ra2['inputs_embeds']!), asNumbers(ra['inputs_embeds']!), 'a seeded session still draws new noise each run');
});

test('a constant alpha (no alpha input) gives the same bounded noise', async () => {
  const base = buildTinyGpt({ dim: D, vocab: V, exposeEmbeddings: true });
  const patched = clone(base);
  applyNeftune(patched, { alpha: 15 });
  const [clean, noisy] = [await sessionFor(base), await sessionFor(patched)];
  assert.deepEqual(noisy.inputNames, clean.inputNames, 'no extra input without alphaInput');
  const { feeds } = feedsFor(clean, B, L, V);
  const e = asNumbers((await clean.run(feeds))['inputs_embeds']!);
  const n = asNumbers((await noisy.run(feeds))['inputs_embeds']!);
  const check = checkUniformNoise(n.map((x, i) => x - e[i]!), 15 / Math.sqrt(L * D));
  assert.ok(check.ok, check.failures.join('; '));
});

/** Makes the patch's uniform draws a graph output so the test can apply the formula to them. */
function exposeUniform(model: Model): string[] {
  const names: string[] = [];
  for (const g of model.allGraphs()) {
    for (const node of g) {
      if (node.opType === 'RandomUniformLike' && node.name?.startsWith('neftune__')) {
        const v: Value = node.output(0);
        v.info = { name: v.name, type: { tensor_type: { elem_type: 1 } } };
        model.graph.addOutput(v);
        names.push(v.name);
      }
    }
  }
  return names;
}

for (const dtype of ['float', 'float16'] as const) {
  test(`mask mode (${dtype}): per-row scale from the mask, zero on padding, no NaN on an empty row`, async () => {
    const base = buildTinyBert({ dtype, dim: D, vocab: V, exposeEmbeddings: true });
    const patched = clone(base);
    applyNeftune(patched, { mode: 'mask', alpha: ALPHA });
    const [uniformName] = exposeUniform(patched);
    const [clean, noisy] = [await sessionFor(base), await sessionFor(patched)];
    const { feeds, lengths, mask } = feedsFor(clean, B, L, V);
    assert.equal(lengths.at(-1), 0, 'the last row is all padding');
    const name = dtype === 'float' ? 'word_embeds' : 'word_embeds_float';
    const e = asNumbers((await clean.run(feeds))[name]!);
    const out = await noisy.run(feeds);
    const n = asNumbers(out[name]!);
    const u = asNumbers(out[uniformName!]!);
    const scale = e.map((_, i) => {
      const token = Math.floor(i / D), row = Math.floor(token / L);
      return mask[token]! ? ALPHA / Math.sqrt(Math.max(lengths[row]! * D, 1)) : 0;
    });
    for (let i = 0; i < n.length; i++) {
      const expected = e[i]! + u[i]! * scale[i]!;
      const tol = dtype === 'float' ? 1e-6 : (Math.abs(e[i]!) + scale[i]!) * 2 ** -10;
      assert.ok(Number.isFinite(n[i]!), `element ${i} is finite`);
      assert.ok(Math.abs(n[i]! - expected) <= tol, `element ${i}: ${n[i]} vs formula ${expected}`);
    }
    const check = checkUniformNoise(n.map((x, i) => x - e[i]!), scale, { tolerance: e.map((x, i) => (Math.abs(x) + scale[i]!) * ulpFactor[dtype]) });
    assert.ok(check.ok, check.failures.join('; '));
    assert.ok(check.zeroCount >= L * D, 'the empty row and padding carry no noise');
  });

  test(`packed mode (${dtype}): per-segment scale from restarting position ids`, async () => {
    const base = buildTinyGpt({ dtype, dim: D, vocab: V, exposeEmbeddings: true, positionIdsInput: true });
    const patched = clone(base);
    applyNeftune(patched, { mode: 'packed', alpha: ALPHA });
    const [uniformName] = exposeUniform(patched);
    const [clean, noisy] = [await sessionFor(base), await sessionFor(patched)];
    const { feeds, positions } = feedsFor(clean, B, L, V);
    const name = dtype === 'float' ? 'inputs_embeds' : 'inputs_embeds_float';
    const e = asNumbers((await clean.run(feeds))[name]!);
    const out = await noisy.run(feeds);
    const n = asNumbers(out[name]!);
    const u = asNumbers(out[uniformName!]!);
    // Segment length per token, straight from the definition: run of positions 0,1,2,... in its row.
    const segLength: number[] = [];
    for (let b = 0; b < B; b++) {
      const row = positions.slice(b * L, (b + 1) * L);
      for (let i = 0; i < L; i++) {
        let start = i; while (start > 0 && row[start]! !== 0) start--;
        let end = i + 1; while (end < L && row[end]! !== 0) end++;
        segLength.push(end - start);
      }
    }
    for (let i = 0; i < n.length; i++) {
      const s = ALPHA / Math.sqrt(segLength[Math.floor(i / D)]! * D);
      const expected = e[i]! + u[i]! * s;
      const tol = dtype === 'float' ? 1e-6 : (Math.abs(e[i]!) + s) * 2 ** -10;
      assert.ok(Math.abs(n[i]! - expected) <= tol, `element ${i}: ${n[i]} vs formula ${expected} (segment length ${segLength[Math.floor(i / D)]})`);
    }
  });
}

test('packed mode zeroes padding given by the attention mask', async () => {
  const base = buildTinyBert({ dim: D, vocab: V, exposeEmbeddings: true, positionIdsInput: true });
  const patched = clone(base);
  applyNeftune(patched, { mode: 'packed' });
  const [clean, noisy] = [await sessionFor(base), await sessionFor(patched)];
  const { feeds, mask } = feedsFor(clean, B, L, V);
  const e = asNumbers((await clean.run(feeds))['word_embeds']!);
  const n = asNumbers((await noisy.run(feeds))['word_embeds']!);
  for (let i = 0; i < n.length; i++) {
    if (!mask[Math.floor(i / D)]) assert.equal(n[i], e[i], `padding element ${i} unchanged`);
    assert.ok(Number.isFinite(n[i]!));
  }
  assert.notDeepEqual(n, e);
});

test('mode needing a newer opset fails with a clear error and leaves the model alone', () => {
  const model = buildTinyGpt({ opset: 14, positionIdsInput: true });
  const before = encodeModel(model);
  assert.throws(() => applyNeftune(model, { mode: 'packed' }), /Mode packed needs default-domain opset >= 16; this model imports opset 14/);
  assert.deepEqual(encodeModel(model), before);
});

test('ort is the real onnxruntime-node', () => {
  assert.ok(ort.env.versions.node, 'onnxruntime-node version is reported');
});
