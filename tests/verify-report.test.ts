/** verify reports what it ran: the shapes fed, the runs asked for, and what a second session draws. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ModelBuilder, Tensor, type Model } from '../src/graph/index.js';
import { applyNeftune, type NeftuneOptions } from '../src/passes/index.js';
import { verifyNeftune, type VerifyReport } from '../src/verify/index.js';
import { loadRuntime } from '../src/runtime/node.js';
import { buildTinyGpt, randomFloats } from '../examples/models.js';

const cpu = loadRuntime('cpu');
async function verify(model: Model, options: { batch?: number; seq?: number; runs?: number } = {}): Promise<VerifyReport> {
  const rt = await cpu;
  return verifyNeftune(model, { ort: rt.ort, ep: 'cpu', sessionOptions: rt.sessionOptions, ...options });
}

/** A token lookup whose ids input has the given dims (symbolic names or fixed sizes), plus an attention mask. */
function lookupModel(idsDims: Array<string | number>, maskDims: Array<string | number> = idsDims): Model {
  const b = new ModelBuilder({ opset: 17, irVersion: 8 });
  const ids = b.input('input_ids', 'int64', idsDims);
  const mask = b.input('attention_mask', 'int64', maskDims);
  const table = b.initializer('wte', Tensor.fromArray('float', [50, 8], randomFloats(400, 3)));
  const embeds = b.op('Gather', [table, ids], { axis: 0 }, { name: 'lookup', outputs: ['embeds'] });
  const maskF = b.op('Cast', [mask], { to: 1 });
  const masked = b.op('Mul', [embeds, b.op('Unsqueeze', [maskF, b.constant('axes', 'int64', [1], [2])])]);
  b.output(masked, 'float', [idsDims[0]!, idsDims[1]!, 8]);
  return b.build();
}

const patched = (model: Model, options: NeftuneOptions = {}) => { applyNeftune(model, options); return model; };

test('symbolic dims not named like batch/sequence are sized by position and use, and reported', async () => {
  const report = await verify(patched(lookupModel(['b', 'unk__530'])), { batch: 3, seq: 5 });
  assert.ok(report.ok, report.message);
  const ids = report.sites[0]!.inputs.find((i) => i.name === 'input_ids')!;
  assert.deepEqual(ids.dims, [3, 5]);
  assert.deepEqual(ids.origin, ['"b": batch', '"unk__530": sequence']);
  assert.deepEqual(report.sites[0]!.inputs.find((i) => i.name === 'attention_mask')!.dims, [3, 5]);
  assert.equal(report.sites[0]!.stats!.count, 3 * 5 * 8 * report.runs - report.sites[0]!.stats!.zeroCount);
});

test('a fixed sequence dim overrides --seq, and the report says so', async () => {
  const report = await verify(patched(lookupModel(['batch', 7])), { batch: 2, seq: 16 });
  assert.ok(report.ok, report.message);
  assert.deepEqual(report.sites[0]!.inputs.find((i) => i.name === 'input_ids')!.dims, [2, 7]);
  assert.ok(report.notes.some((n) => /input_ids was fed as \[2, 7\].*fixed 7 \(not the requested sequence length 16\)/.test(n)), report.notes.join('\n'));
});

test('--runs 1 runs once, and the freshness check is reported as not run', async () => {
  const report = await verify(patched(lookupModel(['batch', 'sequence'])), { batch: 2, seq: 4, runs: 1 });
  assert.equal(report.runs, 1);
  const site = report.sites[0]!;
  assert.equal(site.stats!.count + site.stats!.zeroCount, 2 * 4 * 8, 'one run of [2, 4, 8] noise elements');
  assert.ok(!site.checks.some((c) => c.name === 'fresh'));
  assert.deepEqual(site.notRun.map((c) => c.name), ['fresh']);
  assert.ok(report.notes.some((n) => /check fresh not run/.test(n)));
  const three = await verify(patched(lookupModel(['batch', 'sequence'])), { batch: 2, seq: 4, runs: 3 });
  assert.equal(three.sites[0]!.stats!.count + three.sites[0]!.stats!.zeroCount, 3 * 2 * 4 * 8);
  assert.ok(three.sites[0]!.checks.some((c) => c.name === 'fresh' && c.ok));
});

test('a second session replaying the noise of the first is found and reported (unseeded and seeded)', async () => {
  for (const options of [{}, { seed: 7 }] as NeftuneOptions[]) {
    const report = await verify(patched(lookupModel(['batch', 'sequence']), options));
    const seen = report.sites[0]!.newSession!;
    assert.ok(seen, 'the two-session check ran');
    // ONNX Runtime (node CPU) restarts the same sequence per session, seeded or not (shared/docs/training.md).
    assert.equal(seen.replayed, true, seen.detail);
    assert.match(seen.detail, /training loop must keep one session/);
    assert.ok(report.notes.some((n) => /second ONNX Runtime session/.test(n)));
    assert.ok(report.ok, 'replay across sessions is reported, not a failed check');
  }
});

test('bad batch, seq or runs are a typed error from the library: could not verify (VERIFY_UNABLE), not a failed check', async () => {
  await assert.rejects(verify(patched(lookupModel(['batch', 'sequence'])), { runs: 0 }), { code: 'VERIFY_UNABLE' });
  await assert.rejects(verify(patched(lookupModel(['batch', 'sequence'])), { seq: 1.5 }), { code: 'VERIFY_UNABLE' });
});

test('a model that imported no default-domain opset verifies, strip check included (ORT refuses a model without one)', async () => {
  const model = lookupModel(['batch', 'sequence']);
  delete model.proto.opset_import;
  const report = await verify(patched(model));
  assert.ok(report.ok, report.message);
  assert.ok(report.sites[0]!.checks.some((c) => c.name === 'strip' && c.ok));
});

test('inputs named __proto__ or constructor are fed like any other', async () => {
  const b = new ModelBuilder({ opset: 17, irVersion: 8 });
  const ids = b.input('__proto__', 'int64', ['batch', 'sequence']);
  const extra = b.input('constructor', 'float', ['batch']);
  const table = b.initializer('wte', Tensor.fromArray('float', [50, 8], randomFloats(400, 3)));
  const embeds = b.op('Gather', [table, ids], { axis: 0 }, { name: 'lookup', outputs: ['embeds'] });
  b.output(embeds, 'float', ['batch', 'sequence', 8]);
  b.output(b.op('Identity', [extra]), 'float', ['batch']);
  const report = await verify(patched(b.build(), { tables: ['wte'] }));
  assert.ok(report.ok, report.message);
  assert.deepEqual(report.sites[0]!.inputs.map((i) => i.name).sort(), ['__proto__', 'constructor']);
});

test('an input verify cannot make up is "could not verify" (VERIFY_UNABLE), not a failed check', async () => {
  const b = new ModelBuilder({ opset: 17, irVersion: 8 });
  const ids = b.input('input_ids', 'int64'); // no shape: its rank is unknown
  const table = b.initializer('wte', Tensor.fromArray('float', [50, 8], randomFloats(400, 3)));
  b.output(b.op('Gather', [table, ids], { axis: 0 }, { name: 'lookup', outputs: ['embeds'] }), 'float');
  await assert.rejects(verify(patched(b.build(), { tables: ['wte'] })), (e: Error & { code?: string }) => e.code === 'VERIFY_UNABLE' && /rank is unknown/.test(e.message));
});

test('verify holds one ONNX Runtime session at a time: the replay and strip sessions load after the first is released', async () => {
  const rt = await cpu;
  let live = 0, most = 0, created = 0;
  // The real runtime, counting the sessions alive at once.
  const InferenceSession = {
    create: async (...args: Parameters<typeof rt.ort.InferenceSession.create>) => {
      const session = await rt.ort.InferenceSession.create(...args);
      created++; most = Math.max(most, ++live);
      const release = session.release.bind(session);
      session.release = async () => { live--; return release(); };
      return session;
    },
  };
  const { model } = applyNeftune(buildTinyGpt({ vocab: 64 }), { seed: 3 });
  const report = await verifyNeftune(model, { ort: { ...rt.ort, InferenceSession } as typeof rt.ort, ep: 'cpu', sessionOptions: rt.sessionOptions });
  assert.equal(report.ok, true, report.message);
  assert.ok(report.sites.every((s) => s.newSession), 'the replay check ran');
  assert.ok(created >= 3, `probe, replay and strip sessions (${created})`);
  assert.equal(most, 1, 'sessions alive at once');
  assert.equal(live, 0, 'every session released');
});
