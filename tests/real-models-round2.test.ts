/**
 * Issue 10: classes of real third-party models that did not patch right, each pinned with a
 * builder-made model (tests/fixtures-round2.ts) and, where the shared fixtures show the class, with
 * the fixture: through the library, the real CLI and ONNX Runtime.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { ModelBuilder, OnnxNeftuneError, Tensor, decodeModel, encodeModel, type Model } from '../src/graph/index.js';
import {
  NoEmbeddingError, PATCH_METADATA_KEY, PatchOptionError, applyNeftune, findEmbeddings, isPatched, stripNeftune, type NeftuneOptions,
} from '../src/passes/index.js';
import { verifyNeftune } from '../src/verify/index.js';
import { loadRuntime } from '../src/runtime/node.js';
import { buildTinyTrainingGraph, randomFloats } from '../examples/models.js';
import { runCli, runCliJson, tempDir } from './cli-helpers.js';
import { readFixture, sameBytes, skipWithoutFixtures } from './helpers.js';
import { ort } from './ort-helpers.js';
import {
  buildAtenOpModel, buildDecoderModel, buildDeepIdsChain, buildLookupFormsModel, buildMaskedIdsModel, buildOpset6Model,
} from './fixtures-round2.js';

const dir = tempDir('round2');
let files = 0;
function writeModel(model: Model | Uint8Array, name = 'model'): string {
  const file = path.join(dir, `${name}-${files++}.onnx`);
  writeFileSync(file, model instanceof Uint8Array ? model : encodeModel(model));
  return file;
}
const cpu = loadRuntime('cpu');
async function verifyCpu(model: Model) {
  const rt = await cpu;
  return verifyNeftune(model, { ort: rt.ort, ep: 'cpu', sessionOptions: rt.sessionOptions });
}
const int64 = (values: number[], dims: number[]) => new ort.Tensor('int64', BigInt64Array.from(values.map(BigInt)), dims);

/** Patch with the CLI into a fresh file: exit code, JSON, and whether an output was written. */
function cliPatch(file: string, extra: string[] = []) {
  const out = path.join(dir, `out-${files++}.onnx`);
  const r = runCliJson(['patch', file, '-o', out, ...extra]);
  return { ...r, out, written: existsSync(out) };
}

// ---------------------------------------------------------------------------------------------
// 1. Token ids that reach the lookup through arithmetic.

test('ids zeroed by the mask (ids * mask, ids * mask + token_type_ids) are token ids; cumsum positions stay positions', async () => {
  const cases = [
    { form: 'mul' as const, derivation: 'input_ids * attention_mask', via: ['Mul'] },
    { form: 'mul-add' as const, derivation: '(input_ids * attention_mask) + token_type_ids', via: ['Add', 'Mul'] },
  ];
  for (const { form, derivation, via } of cases) {
    const bytes = encodeModel(buildMaskedIdsModel({ form }));
    const report = findEmbeddings(decodeModel(bytes));
    const byNode = new Map(report.candidates.map((c) => [c.nodeLabel, c]));
    const word = byNode.get('word_lookup')!;
    assert.equal(word.role, 'token', `${form}: ${word.reasons.join('; ')}`);
    assert.deepEqual(word.indices, { source: 'graph-input', input: 'input_ids', via, derivation });
    assert.ok(word.reasons.some((r) => r.includes(`computed from graph input "input_ids": ${derivation}`)), word.reasons.join('; '));
    const position = byNode.get('position_lookup')!;
    assert.equal(position.role, 'position');
    assert.equal(position.indices.source, 'position-computation');
    assert.equal(position.indices.via.at(-1), 'CumSum');
    assert.match(position.indices.derivation!, /CumSum\(attention_mask\) \* attention_mask\) \+ 1/);
    assert.equal(byNode.get('token_type_lookup')!.role, 'token_type');
    assert.deepEqual(report.defaultTarget.map((c) => c.nodeLabel), ['word_lookup']);

    // The default patch now succeeds, runs, verifies and strips back to the original bytes.
    const model = decodeModel(bytes);
    const result = applyNeftune(model, { mode: 'mask', alphaInput: true });
    assert.deepEqual(result.record.sites.map((s) => s.lookup), ['word_lookup']);
    const verified = await verifyCpu(model);
    assert.ok(verified.ok, `${form}: ${verified.message}`);
    assert.equal(verified.ran, 'whole');
    const stripped = decodeModel(encodeModel(model));
    stripNeftune(stripped);
    assert.ok(sameBytes(encodeModel(stripped), bytes));

    // inspect shows the derivation in via and the reasons; patch exits 0 (it exited 3 before).
    const file = writeModel(bytes, form);
    const inspected = runCliJson(['inspect', file]).json.files[0].model.embeddings;
    const c = inspected.candidates.find((x: { node: string }) => x.node === 'word_lookup');
    assert.equal(c.role, 'token');
    assert.deepEqual(c.indices.via, via);
    assert.equal(c.indices.derivation, derivation);
    assert.ok(c.reasons.some((r: string) => r.includes(derivation)));
    assert.equal(c.defaultTarget, true);
    assert.match(runCli(['inspect', file]).stdout, new RegExp(`word_lookup: .*${derivation.replace(/[()*+]/g, '\\$&')}`));
    const patched = cliPatch(file);
    assert.equal(patched.code, 0, JSON.stringify(patched.json.files[0]?.error));
  }
});

test('a derivation is abbreviated past a few operators; a 200,000-op chain is traced without recursion', () => {
  const short = findEmbeddings(buildDeepIdsChain(2)).candidates[0]!;
  assert.equal(short.indices.derivation, '((input_ids * attention_mask) + 0) - 0');
  const long = findEmbeddings(buildDeepIdsChain(10)).candidates[0]!;
  assert.equal(long.role, 'token');
  assert.match(long.indices.derivation!, /^\(\(\(… [+-] 0\) [+-] 0\) [+-] 0\) [+-] 0$/);
  assert.equal(long.indices.via.length, 11);
  // Recursion proportional to the depth would overflow the stack here; the old 32-step walk gave up (role other).
  const deep = findEmbeddings(buildDeepIdsChain(200_000));
  const c = deep.candidates[0]!;
  assert.equal(c.role, 'token');
  assert.equal(c.indices.input, 'input_ids');
  assert.equal(c.indices.via.length, 34, 'via lists 32 ops, then … and the op at the source');
  assert.deepEqual(c.indices.via.slice(-2), ['…', 'Mul']);
  assert.equal(deep.defaultTarget.length, 1);
});

test('many lookups along one long index chain: each value is traced once (finishes in a killed-on-timeout child)', { timeout: 200_000 }, () => {
  // 40,000 lookups, each reading a deeper point of one 40,000-op chain: re-tracing per lookup is 800 million steps.
  const url = (p: string) => JSON.stringify(new URL(p, import.meta.url).href);
  const source = `
    const { ModelBuilder, Tensor } = await import(${url('../src/graph/index.js')});
    const { findEmbeddings } = await import(${url('../src/passes/index.js')});
    const b = new ModelBuilder({ opset: 17, irVersion: 8 });
    const ids = b.input('input_ids', 'int64', ['batch', 'sequence']);
    const mask = b.input('attention_mask', 'int64', ['batch', 'sequence']);
    const zero = b.constant('zero', 'int64', [], [0]);
    const table = b.initializer('wte', Tensor.fromArray('float', [10, 4], new Float32Array(40)));
    let v = b.op('Mul', [ids, mask]);
    let sum;
    for (let i = 0; i < 40000; i++) {
      v = b.op('Add', [v, zero]);
      const e = b.op('Gather', [table, v], { axis: 0 });
      sum = sum ? b.op('Add', [sum, e]) : e;
    }
    b.output(sum, 'float', ['batch', 'sequence', 4]);
    const report = findEmbeddings(b.build());
    console.log(JSON.stringify({ tokens: report.candidates.filter((c) => c.role === 'token').length, targets: report.defaultTarget.length }));
  `;
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', source], { timeout: 180_000, maxBuffer: 1 << 24 });
  assert.equal(r.error, undefined, `did not finish within 180 s (${r.error?.message})`);
  assert.equal(r.status, 0, r.stderr.toString());
  assert.deepEqual(JSON.parse(r.stdout.toString()), { tokens: 40_000, targets: 40_000 });
});

// ---------------------------------------------------------------------------------------------
// 2. Embedding op forms, and why a lookup-like node is not a candidate.

test('com.microsoft ATenOp aten::embedding: recognised, patched, stripped (with and without the record), verified through the slice', async () => {
  const bytes = encodeModel(buildAtenOpModel());
  const report = findEmbeddings(decodeModel(bytes));
  assert.deepEqual(report.candidates.map((c) => [c.nodeLabel, c.kind, c.role, c.table.name, c.table.storage]),
    [['embed_lookup', 'ATenOp.embedding', 'token', 'embed.weight', 'graph-input']]);
  assert.deepEqual(report.defaultTarget.map((c) => c.nodeLabel), ['embed_lookup']);
  assert.deepEqual(report.nearMisses, [], 'the backward ATenOp is neither a candidate nor a near miss');

  const model = decodeModel(bytes);
  const result = applyNeftune(model, { alphaInput: true, seed: 7 });
  assert.deepEqual(result.warnings.filter((w) => /backward pass/.test(w)), [], 'the aten::embedding_backward ATenOp marks a training graph');
  assert.equal(model.graph.value(result.record.sites[0]!.clean)!.producer!.opType, 'ATenOp');
  const patched = encodeModel(model);
  for (const dropRecord of [false, true]) {
    const m = decodeModel(patched);
    if (dropRecord) m.metadata.delete(PATCH_METADATA_KEY);
    assert.ok(isPatched(m), `recognised by structure (record dropped: ${dropRecord})`);
    const strip = stripNeftune(m);
    assert.equal(strip.modified, true);
    assert.deepEqual(strip.restoredValues, ['embed_output']);
    assert.ok(sameBytes(encodeModel(m), bytes), `byte-exact strip (record dropped: ${dropRecord})`);
  }

  // ONNX Runtime has no ATenOp kernel: the whole model does not load; the slice runs it as a Gather.
  await assert.rejects(ort.InferenceSession.create(bytes));
  const verified = await verifyCpu(decodeModel(patched));
  assert.ok(verified.ok, verified.message);
  assert.equal(verified.ran, 'slice');
  assert.deepEqual(verified.sites[0]!.checks.map((c) => [c.name, c.ok]), [['noise', true], ['fresh', true], ['alpha-zero', true], ['strip', true]]);

  const file = writeModel(bytes, 'atenop');
  const inspected = runCliJson(['inspect', file]).json.files[0].model.embeddings;
  assert.equal(inspected.candidates[0].kind, 'ATenOp.embedding');
  const cli = cliPatch(file);
  assert.equal(cli.code, 0, JSON.stringify(cli.json.files[0]?.error));
  const restored = path.join(dir, `restored-${files++}.onnx`);
  assert.equal(runCli(['strip', cli.out, '-o', restored]).code, 0);
});

test('near misses: embedding_bag (ATen, ATenOp) and one-hot MatMul lookups are listed with what can be done', () => {
  const model = buildLookupFormsModel();
  const report = findEmbeddings(model);
  assert.deepEqual(report.candidates, []);
  const misses = new Map(report.nearMisses.map((m) => [m.node, m.reason]));
  assert.deepEqual([...misses.keys()].sort(), ['aten_embedding_bag', 'atenop_embedding_bag', 'onehot_cast_matmul', 'onehot_matmul']);
  for (const bag of ['aten_embedding_bag', 'atenop_embedding_bag']) {
    assert.match(misses.get(bag)!, /embedding_bag on table "bag\.weight" sums or averages bags of rows.*Export the model with per-token lookups \(nn\.Embedding/);
  }
  for (const matmul of ['onehot_matmul', 'onehot_cast_matmul']) {
    assert.match(misses.get(matmul)!, /MatMul of OneHot\(input_ids\) with table "onehot\.weight" is an embedding lookup written as a product.*Export the embedding as a lookup/);
  }
  assert.throws(() => applyNeftune(model), NoEmbeddingError);
  // The hand-written backward's one-hot MatMul (a gradient, behind a Transpose) is not a lookup.
  assert.deepEqual(findEmbeddings(buildTinyTrainingGraph()).nearMisses, []);
  const json = runCliJson(['inspect', writeModel(model, 'forms')]).json.files[0].model.embeddings;
  assert.deepEqual(json.nearMisses.map((m: { node: string }) => m.node).sort(), ['aten_embedding_bag', 'atenop_embedding_bag', 'onehot_cast_matmul', 'onehot_matmul']);
});

/** A BERT embedding block fused into com.microsoft EmbedLayerNormalization, nothing else to patch. */
function fusedModel(): Model {
  const b = new ModelBuilder({ opset: 17, irVersion: 8, opsets: { 'com.microsoft': 1 } });
  const ids = b.input('input_ids', 'int32', ['batch', 'sequence']);
  const segments = b.input('segment_ids', 'int32', ['batch', 'sequence']);
  const t = (name: string, rows: number, seed: number) => b.initializer(name, Tensor.fromArray('float', [rows, 8], randomFloats(rows * 8, seed)));
  const [out] = b.node('EmbedLayerNormalization', [ids, segments, t('word', 30, 1), t('position', 16, 2), t('segment', 2, 3),
    b.constant('gamma', 'float', [8], new Float32Array(8).fill(1)), b.constant('beta', 'float', [8], new Float32Array(8))],
  { epsilon: 1e-5 }, { name: 'fused_embeddings', domain: 'com.microsoft', outputCount: 2 });
  b.output(out!, 'float', ['batch', 'sequence', 8]);
  return b.build();
}

const CHOOSING = /--table|--node|--all-candidates|\btables\b|\bnodes\b|allCandidates/;

test('a lookup fused into EmbedLayerNormalization: every refusal says to export without the fusion, none suggests choosing a table', { skip: skipWithoutFixtures }, () => {
  const models: Array<[string, () => Model, string]> = [
    ['builder', fusedModel, 'fused_embeddings'],
    ['ort_tiny_gpt2_beamsearch_fp16.onnx', () => decodeModel(readFixture('ort_tiny_gpt2_beamsearch_fp16.onnx')), 'EmbedLayerNormalization_0'],
  ];
  for (const [label, build, node] of models) {
    const c = findEmbeddings(build()).candidates[0]!;
    assert.equal(c.patchable, false);
    assert.match(c.notPatchableReason!, /disable_embed_layer_norm_fusion=True.*--disable_embed_layer_norm/);
    const table = c.table.name;
    const optionSets: NeftuneOptions[] = [{}, { allCandidates: true }, { nodes: [node] }, { tables: [table] }, { mode: 'mask' }];
    for (const options of optionSets) {
      assert.throws(() => applyNeftune(build(), options), (e: unknown) => {
        assert.ok(e instanceof OnnxNeftuneError && e.code === 'NO_EMBEDDING', `${label} ${JSON.stringify(options)}: ${String(e)}`);
        const firstLine = e.message.split('\n')[0]!;
        assert.doesNotMatch(firstLine, CHOOSING, `${label} ${JSON.stringify(options)}: ${firstLine}`);
        assert.match(firstLine, /Export the model without that fusion/, `${label} ${JSON.stringify(options)}`);
        return true;
      });
    }
    const file = writeModel(build(), 'fused');
    const cli = cliPatch(file);
    assert.equal(cli.code, 3);
    assert.equal(cli.written, false);
    assert.doesNotMatch(cli.json.files[0].error.message.split('\n')[0], CHOOSING);
    assert.match(cli.json.files[0].error.message, /disable_embed_layer_norm/);
  }
});

// ---------------------------------------------------------------------------------------------
// 3. Old opsets: analysis and patch tell one story.

test('opset 6: candidates are not patchable, there is no default target, and patch refuses without suggesting the mode in use', () => {
  const bytes = encodeModel(buildOpset6Model());
  const report = findEmbeddings(decodeModel(bytes));
  const [c] = report.candidates;
  assert.equal(c!.role, 'token');
  assert.equal(c!.patchable, false);
  assert.equal(c!.invalidReason, undefined);
  assert.match(c!.notPatchableReason!, /opset 6 < 7.*onnx\.version_converter/);
  assert.deepEqual(report.defaultTarget, []);
  assert.match(report.targetReason, /no patchable token embedding: encoder_lookup: .*opset 6 < 7/);
  for (const mode of ['hf', 'mask', 'packed'] as const) {
    const model = decodeModel(bytes);
    assert.throws(() => applyNeftune(model, { mode }), (e: unknown) => {
      assert.ok(e instanceof PatchOptionError, String(e));
      assert.match(e.message, new RegExp(`Mode ${mode} needs default-domain opset >= \\d+; this model imports opset 6 \\(ONNX Runtime runs opset 7 and newer only\\).*onnx\\.version_converter`));
      assert.doesNotMatch(e.message, /use mode/, 'no mode works at opset 6');
      return true;
    });
    assert.ok(sameBytes(encodeModel(model), bytes));
  }
  assert.throws(() => applyNeftune(decodeModel(bytes), { tables: ['encoder.weight'] }), PatchOptionError);

  const file = writeModel(bytes, 'opset6');
  const inspected = runCliJson(['inspect', file]);
  assert.equal(inspected.code, 0);
  const e = inspected.json.files[0].model.embeddings;
  assert.equal(e.candidates[0].patchable, false);
  assert.equal(e.candidates[0].defaultTarget, false);
  assert.match(e.candidates[0].notPatchableReason, /opset 6 < 7/);
  assert.deepEqual(e.defaultTarget, []);
  const patched = cliPatch(file);
  assert.equal(patched.code, 2);
  assert.equal(patched.written, false);
  assert.equal(patched.json.files[0].error.code, 'BAD_OPTION');
  assert.doesNotMatch(patched.json.files[0].error.message, /use mode hf/);
});

test('a mode the opset cannot carry suggests only the modes that work there', () => {
  const at = (opset: number) => {
    const b = new ModelBuilder({ opset, irVersion: 3 });
    const ids = b.input('input_ids', 'int64', ['batch', 'sequence']);
    b.input('attention_mask', 'int64', ['batch', 'sequence']);
    b.input('position_ids', 'int64', ['batch', 'sequence']);
    b.output(b.op('Gather', [b.initializer('wte', Tensor.fromArray('float', [10, 4], new Float32Array(40))), ids], { axis: 0 }), 'float', ['batch', 'sequence', 4]);
    return b.build();
  };
  assert.equal(findEmbeddings(at(7)).defaultTarget.length, 1, 'opset 7 is patchable in mode hf');
  assert.throws(() => applyNeftune(at(7), { mode: 'mask' }), (e: unknown) => e instanceof PatchOptionError && / or use mode hf\.$/.test(e.message));
  assert.throws(() => applyNeftune(at(7), { mode: 'packed' }), (e: unknown) => e instanceof PatchOptionError && / or use mode hf\.$/.test(e.message));
  assert.throws(() => applyNeftune(at(9), { mode: 'packed' }), (e: unknown) => e instanceof PatchOptionError && / or use mode hf or mask\.$/.test(e.message));
  assert.equal(applyNeftune(at(7)).record.sites.length, 1);
});

// ---------------------------------------------------------------------------------------------
// 4. Options checked against the model: the mask (and packed position ids) must fit the ids.

test('an encoder mask on decoder ids is refused, naming both shapes; the model is untouched', () => {
  const bytes = encodeModel(buildDecoderModel());
  const model = decodeModel(bytes);
  assert.throws(() => applyNeftune(model, { mode: 'mask', maskInput: 'encoder_attention_mask' }), (e: unknown) => {
    assert.ok(e instanceof PatchOptionError, String(e));
    assert.match(e.message, /The mask input "encoder_attention_mask" is \[batch, source_tokens\], but the token ids of decoder_embed_tokens \("input_ids"\) are \[batch, target_tokens\]: dim 1 is "source_tokens" where the ids have "target_tokens"/);
    assert.match(e.message, /with maskInput\b/, 'the library names its option');
    assert.doesNotMatch(e.message, /--mask-input/, 'not the CLI flag');
    return true;
  });
  assert.ok(sameBytes(encodeModel(model), bytes));

  const refused: Array<[string, Parameters<typeof buildDecoderModel>[0], RegExp]> = [
    ['fixed sizes', { idsDims: [2, 5], maskDims: [2, 7] }, /is \[2, 7\], but .* are \[2, 5\]: dim 1 is 7 where the ids have 5/],
    ['rank', { maskDims: ['batch'] }, /it has rank 1, the ids rank 2/],
  ];
  for (const [label, options, why] of refused) {
    assert.throws(() => applyNeftune(buildDecoderModel(options), { mode: 'mask', maskInput: 'encoder_attention_mask' }), (e: unknown) => e instanceof PatchOptionError && why.test(e.message), label);
  }
  // Sizes that may still agree at run time: patched, with a warning saying what may fail.
  const doubtful: Array<[string, Parameters<typeof buildDecoderModel>[0], RegExp]> = [
    ['no declared shape', { maskDims: null }, /^Cannot check the mask input "encoder_attention_mask" against the token ids "input_ids" \[batch, target_tokens\]: "encoder_attention_mask" has no declared shape/],
    ['generated names', { idsDims: ['unk__1', 'unk__2'], maskDims: ['unk__1', 'unk__3'] }, /dim 1 is "unk__3" where the ids have "unk__2"; if the sizes differ at run time, ONNX Runtime fails inside the inserted Mul/],
    ['torch dynamic axes', { idsDims: ['input_ids_dynamic_axes_1', 'input_ids_dynamic_axes_2'], maskDims: ['input_ids_dynamic_axes_1', 'encoder_attention_mask_dynamic_axes_2'] }, /dim 1 is "encoder_attention_mask_dynamic_axes_2"/],
    ['a name against a size', { maskDims: ['batch', 7] }, /dim 1 is 7 where the ids have "target_tokens"/],
  ];
  for (const [label, options, why] of doubtful) {
    const result = applyNeftune(buildDecoderModel(options), { mode: 'mask', maskInput: 'encoder_attention_mask' });
    assert.ok(result.warnings.some((w) => why.test(w)), `${label}: ${result.warnings.join(' | ')}`);
  }
  // Sites that share ids and mask share one warning (a model can have thousands of lookups).
  const b = new ModelBuilder({ opset: 17, irVersion: 8 });
  const ids = b.input('input_ids', 'int64', ['batch', 'sequence']);
  b.input('attention_mask', 'int64');
  const wte = b.initializer('wte', Tensor.fromArray('float', [10, 4], new Float32Array(40)));
  b.output(b.op('Add', [b.op('Gather', [wte, ids], { axis: 0 }), b.op('Gather', [wte, ids], { axis: 0 })]), 'float', ['batch', 'sequence', 4]);
  const shared = applyNeftune(b.build(), { mode: 'mask' });
  assert.equal(shared.record.sites.length, 2);
  assert.equal(shared.warnings.filter((w) => /Cannot check the mask input "attention_mask"/.test(w)).length, 1, shared.warnings.join(' | '));
  const fits = applyNeftune(buildDecoderModel({ maskDims: ['batch', 'target_tokens'] }), { mode: 'mask', maskInput: 'encoder_attention_mask' });
  assert.ok(!fits.warnings.some((w) => /encoder_attention_mask/.test(w)), fits.warnings.join(' | '));
});

test('the refused combination really fails in ONNX Runtime, inside the inserted Mul', async () => {
  // The same decoder with the mask's shape undeclared patches (with a warning); run with a longer source.
  const clean = buildDecoderModel({ maskDims: null });
  const feeds = {
    input_ids: int64([1, 2, 3, 4, 5, 6, 7, 8, 9, 10], [2, 5]),
    encoder_attention_mask: new ort.Tensor('float32', Float32Array.from({ length: 14 }, (_, i) => (i % 7 < 6 ? 1 : 0)), [2, 7]),
    encoder_hidden_states: new ort.Tensor('float32', Float32Array.from(randomFloats(2 * 7 * 8, 5)), [2, 7, 8]),
  };
  const before = await ort.InferenceSession.create(encodeModel(clean));
  assert.deepEqual((await before.run(feeds))['hidden_states']!.dims, [2, 5, 8], 'the unpatched model runs with these inputs');
  await before.release();
  const patched = decodeModel(encodeModel(clean));
  const result = applyNeftune(patched, { mode: 'mask', maskInput: 'encoder_attention_mask' });
  assert.ok(result.warnings.some((w) => /Cannot check the mask input "encoder_attention_mask".*ONNX Runtime fails inside the inserted Mul/.test(w)), 'the patch warned of exactly this');
  const session = await ort.InferenceSession.create(encodeModel(patched), { logSeverityLevel: 4 }); // the failure is expected: not logged
  await assert.rejects(session.run(feeds), /running Mul node\. Name:'neftune__decoder_embeds__noise'.*broadcast.*5 by 7/);
  await session.release();
});

test('packed mode: position ids that do not fit the ids are refused; fitting ones patch', () => {
  assert.throws(() => applyNeftune(buildDecoderModel({ positionDims: ['batch', 'source_tokens'] }), { mode: 'packed' }), (e: unknown) =>
    e instanceof PatchOptionError
    && /The position ids input "position_ids" is \[batch, source_tokens\], but the token ids of decoder_embed_tokens \("input_ids"\) are \[batch, target_tokens\]/.test(e.message)
    && /with positionIdsInput\b/.test(e.message) && !/--position-ids-input/.test(e.message));
  const fitting = applyNeftune(buildDecoderModel({ positionDims: ['batch', 'target_tokens'] }), { mode: 'packed' });
  assert.equal(fitting.record.sites[0]!.positionIdsInput, 'position_ids');
  const unknown = applyNeftune(buildDecoderModel({ positionDims: null }), { mode: 'packed' });
  assert.ok(unknown.warnings.some((w) => /Cannot check the position ids input "position_ids".*no declared shape/.test(w)), unknown.warnings.join(' | '));
});

test('CLI: --mode mask --mask-input with a mask of other tokens exits 2 and writes nothing', () => {
  const file = writeModel(buildDecoderModel(), 'decoder');
  const r = cliPatch(file, ['--mode', 'mask', '--mask-input', 'encoder_attention_mask']);
  assert.equal(r.code, 2);
  assert.equal(r.written, false);
  assert.equal(r.json.files[0].error.code, 'BAD_OPTION');
  assert.match(r.json.files[0].error.message, /\[batch, source_tokens\].*\[batch, target_tokens\]/);
  assert.match(r.json.files[0].error.message, /with --mask-input\b/, 'the CLI names the flag');
  assert.doesNotMatch(r.json.files[0].error.message, /maskInput/);
  const fine = cliPatch(writeModel(buildDecoderModel({ maskDims: ['batch', 'target_tokens'] }), 'decoder-ok'), ['--mode', 'mask', '--mask-input', 'encoder_attention_mask']);
  assert.equal(fine.code, 0, JSON.stringify(fine.json.files[0]?.error));
});

test('a KV-cache model (ort_gpt2_past: past length is a symbolic dim, 8 positions) runs whole in verify: seq is lowered to fit the position table', { skip: skipWithoutFixtures }, async () => {
  const { model } = applyNeftune(decodeModel(readFixture('ort_gpt2_past.onnx')), { seed: 5 });
  for (const ep of ['cpu', 'wasm'] as const) {
    const rt = await loadRuntime(ep);
    const report = await verifyNeftune(model, { ort: rt.ort, ep, sessionOptions: rt.sessionOptions });
    assert.equal(report.ok, true, `${ep}: ${report.message}`);
    assert.equal(report.ran, 'whole', `${ep}: ${report.sliceReason}`);
    assert.equal(report.seq, 4);
    assert.match(report.notes[0]!, /seq 16 lowered to 4: position table "wpe\.weight_resize" has 8 rows/);
  }
});
