import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { ModelBuilder, OnnxNeftuneError, Tensor, decodeModel, encodeModel, type Model } from '../src/graph/index.js';
import {
  AlreadyPatchedError, AmbiguousEmbeddingError, NoEmbeddingError, PATCH_METADATA_KEY, PatchOptionError, RESERVED_PREFIX,
  applyNeftune, findEmbeddings, isPatched, readPatchRecord, stripNeftune, type NeftuneOptions,
} from '../src/passes/index.js';
import { buildTinyBert, buildTinyGemma, buildTinyGpt, buildTinyT5, buildTinyTrainingGraph } from '../examples/models.js';
import { firstDifference, fixtureNames, fixturesDir, readFixture, sameBytes, skipWithoutFixtures } from './helpers.js';
import { ort } from './ort-helpers.js';

/** What the analysis must report per fixture: candidates as [node label, kind, role], then the target or the error. */
const EXPECTED: Record<string, { candidates: Array<[string, string, string]>; target?: string[]; error?: string }> = {
  'genai_pipeline_embeds_only.onnx': { candidates: [['Gather writing /model/embed_tokens/Gather/output_0', 'Gather', 'token']], target: ['embed_weight'] },
  'genai_tiny_llama_fp16_extdata.onnx': { candidates: [['/model/embed_tokens/Gather', 'Gather', 'token']], target: ['model.embed_tokens.weight'] },
  'genai_tiny_qwen35_decoder_fp16.onnx': { candidates: [['Gather writing inputs_embeds', 'Gather', 'token']], target: ['embed_tokens.weight'] },
  'optimum_tiny_distilbert.onnx': {
    candidates: [['Gather_7', 'Gather', 'token'], ['Gather_8', 'Gather', 'position']],
    target: ['distilbert.embeddings.word_embeddings.weight'],
  },
  'ort_bert_toy_optimized.onnx': {
    candidates: [['Gather_10', 'Gather', 'token'], ['Gather_11', 'Gather', 'position'], ['Gather_12', 'Gather', 'token_type']],
    target: ['bert.embeddings.word_embeddings.weight'],
  },
  'ort_bloom3_ortmodule_training.onnx': {
    candidates: [['/_original_module/_original_model/transformer/word_embeddings/ATen', 'ATen.embedding', 'token']],
    target: ['_original_module._original_model.transformer.word_embeddings.weight'],
  },
  'ort_dummy_t5_beamsearch.onnx': {
    candidates: [
      ['Gather writing decoder_hidden_states', 'Gather', 'token'],
      ['Gather writing encoder_hidden_states', 'Gather', 'token'],
      ['Gather writing decoder_hidden_states', 'Gather', 'token'],
    ],
    target: ['decoder_embeddings', 'encoder_embeddings', 'encoder_embeddings'],
  },
  'ort_embed_layer_norm_format3.onnx': {
    candidates: [['pos_gather', 'Gather', 'position'], ['word_gather', 'Gather', 'token'], ['seg_gather', 'Gather', 'token_type']],
    target: ['word_embed'],
  },
  'ort_embed_layer_norm_format5.onnx': { candidates: [['word_gather', 'Gather', 'token'], ['seg_gather', 'Gather', 'token_type']], target: ['word_embed'] },
  'ort_embed_layer_norm_format9.onnx': { candidates: [['word_gather', 'Gather', 'token'], ['pos_gather', 'Gather', 'position']], target: ['word_embed'] },
  'ort_embed_layer_norm_multiple.onnx': {
    candidates: [
      ['pos_gather_1', 'Gather', 'position'], ['word_gather_1', 'Gather', 'token'], ['seg_gather_1', 'Gather', 'token_type'],
      ['pos_gather_2', 'Gather', 'position'], ['word_gather_2', 'Gather', 'token'], ['seg_gather_2', 'Gather', 'token_type'],
    ],
    target: ['word_embed', 'word_embed'],
  },
  'ort_gpt2_past.onnx': { candidates: [['Gather_30', 'Gather', 'token'], ['Gather_31', 'Gather', 'position']], target: ['wte.weight_resize'] },
  'ort_keras_voice_commands.onnx': { candidates: [['embedding', 'Gather', 'token']], target: ['embedding/embeddings:0'] },
  'ort_tiny_gpt2_beamsearch_fp16.onnx': { candidates: [['EmbedLayerNormalization_0', 'EmbedLayerNormalization', 'token']], error: 'NO_EMBEDDING' },
  'ort_trainapi_adamw_optimizer.onnx': { candidates: [], error: 'NO_EMBEDDING' },
  'ort_trainapi_eval_model.onnx': { candidates: [], error: 'NO_EMBEDDING' },
  'ort_trainapi_training_model.onnx': { candidates: [], error: 'NO_EMBEDDING' },
  'ov_gather_block_quantized_uint8_bits4_zp.onnx': { candidates: [['GatherBlockQuantized writing output', 'GatherBlockQuantized', 'token']], target: ['data'] },
  'tract_gather_block_quantized_int4.onnx': { candidates: [['GatherBlockQuantized writing output', 'GatherBlockQuantized', 'token']], target: ['data'] },
};

/** ORT session options for a fixture (the external-data model needs its data file by name). */
function sessionOptions(name: string): ort.InferenceSession.SessionOptions {
  if (name !== 'genai_tiny_llama_fp16_extdata.onnx') return {};
  return { externalData: [{ path: 'model.onnx.data', data: new Uint8Array(readFileSync(path.join(fixturesDir, 'model.onnx.data'))) }] };
}

async function ortLoads(bytes: Uint8Array, name: string): Promise<boolean> {
  try {
    const s = await ort.InferenceSession.create(bytes, sessionOptions(name));
    await s.release();
    return true;
  } catch {
    return false;
  }
}

test('fixture list matches the expectations table', { skip: skipWithoutFixtures }, () => {
  assert.deepEqual(fixtureNames(), Object.keys(EXPECTED).sort());
});

/** Fixtures whose patched form was loaded by ORT (the check runs only where ORT loads the original). */
const ortChecked: string[] = [];

for (const [name, expected] of Object.entries(EXPECTED)) {
  test(`fixture ${name}: analysis, patch, ORT load, exact strip`, { skip: skipWithoutFixtures }, async () => {
    const bytes = readFixture(name);
    const report = findEmbeddings(decodeModel(bytes));
    assert.deepEqual(report.candidates.map((c) => [c.nodeLabel, c.kind, c.role]), expected.candidates);
    for (const c of report.candidates) assert.ok(c.reasons.length > 0, 'every role has its reasons');
    const model = decodeModel(bytes);
    if (expected.error) {
      assert.throws(() => applyNeftune(model), (e: unknown) => e instanceof OnnxNeftuneError && e.code === expected.error);
      assert.ok(sameBytes(encodeModel(model), bytes), 'a failed patch leaves the model untouched');
      return;
    }
    assert.deepEqual(report.defaultTarget.map((c) => c.table.name), expected.target);
    const result = applyNeftune(model);
    assert.equal(result.record.sites.length, expected.target!.length);
    const patched = encodeModel(model);
    if (await ortLoads(bytes, name)) {
      assert.ok(await ortLoads(patched, name), 'ORT loads the patched model as it loaded the original');
      ortChecked.push(name);
    }
    const stripped = decodeModel(patched);
    assert.equal(stripNeftune(stripped).modified, true);
    const back = encodeModel(stripped);
    assert.ok(sameBytes(back, bytes), `strip restores the bytes (first difference at ${firstDifference(back, bytes)})`);
  });
}

/** Refusals a sweep expects: options that do not fit the model, nothing to patch. */
const SWEEP_REFUSALS = new Set(['BAD_OPTION', 'NO_EMBEDDING']);

test('ORT loaded the patched form of every patchable fixture it loads (14 of 15: not the ORTModule training graph)', { skip: skipWithoutFixtures }, () => {
  assert.equal(ortChecked.length, 14, ortChecked.join(', '));
});

const OPTION_SETS: NeftuneOptions[] = [
  {}, { alpha: 10 }, { seed: 1234 }, { alphaInput: true }, { alphaInput: 'anneal_me', seed: 3 },
  { allCandidates: true }, { afterScale: true }, { mode: 'mask' }, { mode: 'mask', alphaInput: true },
  { mode: 'packed' }, { mode: 'packed', alphaInput: true, seed: 9 },
];

test('strip(patch(m)) is byte-identical for every fixture and option combination', { skip: skipWithoutFixtures }, () => {
  let patchedCount = 0;
  for (const name of fixtureNames()) {
    const bytes = readFixture(name);
    for (const options of OPTION_SETS) {
      const model = decodeModel(bytes);
      try {
        applyNeftune(model, options);
      } catch (error) {
        // Options that do not fit a model (no mask input, old opset, no embedding) fail typed.
        assert.ok(error instanceof OnnxNeftuneError && SWEEP_REFUSALS.has(error.code), `${name} ${JSON.stringify(options)}: ${(error as Error).message}`);
        assert.ok(sameBytes(encodeModel(model), bytes));
        continue;
      }
      patchedCount++;
      const stripped = decodeModel(encodeModel(model));
      stripNeftune(stripped);
      assert.ok(sameBytes(encodeModel(stripped), bytes), `${name} ${JSON.stringify(options)}`);
    }
  }
  // Floor from the count when it was set (113 of 209): a regression that refuses more fails here.
  assert.ok(patchedCount >= 113, `patched ${patchedCount} fixture/option pairs`);
});

const builders: Record<string, () => Model> = {
  gpt: () => buildTinyGpt({ positionIdsInput: true }),
  'gpt-fp16': () => buildTinyGpt({ dtype: 'float16', positionIdsInput: true }),
  'bert-bf16': () => buildTinyBert({ dtype: 'bfloat16' }),
  t5: () => buildTinyT5(),
  gemma: () => buildTinyGemma(),
  'gpt-opset11': () => buildTinyGpt({ opset: 11, irVersion: 6 }),
  'gpt-opset9': () => buildTinyGpt({ opset: 9, irVersion: 4 }),
  training: () => buildTinyTrainingGraph(),
};

test('strip(patch(m)) is byte-identical for builder models, with and without the metadata record', () => {
  let patchedCount = 0;
  for (const [kind, build] of Object.entries(builders)) {
    const bytes = encodeModel(build());
    for (const options of OPTION_SETS) {
      const model = decodeModel(bytes);
      try { applyNeftune(model, options); } catch (error) {
        assert.ok(error instanceof OnnxNeftuneError && error.code === 'BAD_OPTION', `${kind} ${JSON.stringify(options)}: ${(error as Error).message}`);
        continue;
      }
      patchedCount++;
      const patched = encodeModel(model);
      for (const dropRecord of [false, true]) {
        const m = decodeModel(patched);
        if (dropRecord) m.metadata.delete(PATCH_METADATA_KEY);
        assert.ok(isPatched(m));
        stripNeftune(m);
        assert.ok(sameBytes(encodeModel(m), bytes), `${kind} ${JSON.stringify(options)} record dropped: ${dropRecord}`);
      }
    }
  }
  // Floor from the count when it was set (62 of 88).
  assert.ok(patchedCount >= 62, `patched ${patchedCount} builder/option pairs`);
});

test('patched models built at old opsets still run (opset-specific op forms)', async () => {
  for (const [opset, irVersion] of [[9, 4], [11, 6], [13, 7], [21, 10]] as const) {
    // hf mode uses Slice (attribute form before opset 10); mask mode ReduceSum/Unsqueeze (attributes before 13).
    for (const mode of ['hf', 'mask'] as const) {
      const model = buildTinyBert({ opset, irVersion, exposeEmbeddings: true, positionIdsInput: opset < 11 });
      applyNeftune(model, { mode });
      const session = await ort.InferenceSession.create(encodeModel(model));
      const ids = new ort.Tensor('int64', BigInt64Array.from([1n, 2n, 3n]), [1, 3]);
      const feeds: Record<string, ort.Tensor> = {
        input_ids: ids, token_type_ids: new ort.Tensor('int64', new BigInt64Array(3), [1, 3]), attention_mask: new ort.Tensor('int64', BigInt64Array.from([1n, 1n, 0n]), [1, 3]),
        position_ids: new ort.Tensor('int64', BigInt64Array.from([0n, 1n, 2n]), [1, 3]),
      };
      for (const k of Object.keys(feeds)) if (!session.inputNames.includes(k)) delete feeds[k];
      const out = await session.run(feeds);
      assert.equal(out['word_embeds']!.dims.join(), '1,3,16', `opset ${opset} ${mode}`);
      assert.ok(Array.from(out['word_embeds']!.data as Float32Array).every(Number.isFinite));
      assert.equal(model.opsetVersion(''), opset, 'the opset is never changed');
      assert.equal(model.irVersion, irVersion, 'the IR version is never changed');
      await session.release();
    }
  }
});

test('alpha must be finite and > 0; seed must be an integer', () => {
  for (const alpha of [0, -1, NaN, Infinity, -Infinity]) {
    assert.throws(() => applyNeftune(buildTinyGpt(), { alpha }), PatchOptionError, `alpha ${alpha}`);
  }
  assert.throws(() => applyNeftune(buildTinyGpt(), { seed: 1.5 }), PatchOptionError);
  assert.throws(() => applyNeftune(buildTinyGpt(), { mode: 'fancy' as 'hf' }), PatchOptionError);
});

test('patching twice is refused; a re-patch equals patching the clean model', () => {
  const clean = encodeModel(buildTinyGpt());
  const once = decodeModel(clean);
  applyNeftune(once, { alpha: 5 });
  assert.throws(() => applyNeftune(once, { alpha: 10 }), AlreadyPatchedError);
  const repatched = decodeModel(encodeModel(once));
  applyNeftune(repatched, { alpha: 10, seed: 4, repatch: true });
  const direct = decodeModel(clean);
  applyNeftune(direct, { alpha: 10, seed: 4 });
  assert.ok(sameBytes(encodeModel(repatched), encodeModel(direct)));
});

test('strip on an unpatched model says there is nothing to strip and changes nothing', () => {
  const bytes = encodeModel(buildTinyBert());
  const model = decodeModel(bytes);
  const result = stripNeftune(model);
  assert.equal(result.modified, false);
  assert.match(result.message, /Nothing to strip/);
  assert.ok(sameBytes(encodeModel(model), bytes));
});

test('the patch record lists every site and added node; every added name has the reserved prefix', () => {
  const model = buildTinyT5();
  const before = new Set<string>();
  for (const n of model.graph) { before.add(n.name!); for (const v of n.outputs) if (v) before.add(v.name); }
  const result = applyNeftune(model, { seed: 1, alphaInput: true });
  const record = readPatchRecord(model)!;
  assert.deepEqual(record, JSON.parse(JSON.stringify(result.record)));
  assert.equal(record.sites.length, 2);
  assert.deepEqual(record.sites.map((s) => s.value), ['encoder_embeds', 'decoder_embeds']);
  assert.deepEqual(record.added.graphInputs, ['neftune_alpha']);
  const recorded = new Set(record.sites.flatMap((s) => s.addedNodes));
  for (const n of model.graph) {
    if (before.has(n.name!)) continue;
    assert.ok(n.name!.startsWith(RESERVED_PREFIX), `added node ${n.name}`);
    assert.ok(recorded.has(n.name!), `${n.name} is recorded`);
    for (const v of n.outputs) if (v && !record.sites.some((s) => s.value === v.name)) assert.ok(v.name.startsWith(RESERVED_PREFIX), `added value ${v.name}`);
  }
  // The lookups now write the recorded fresh names; the Adds write the original ones.
  for (const site of record.sites) {
    assert.equal(model.graph.value(site.value)!.producer!.opType, 'Add');
    assert.equal(model.graph.value(site.clean)!.producer!.opType, 'Gather');
  }
});

test('explicit targets: by table, by node, all candidates; unknown names list the candidates', () => {
  const byTable = buildTinyBert();
  assert.deepEqual(applyNeftune(byTable, { tables: ['embeddings.position_embeddings.weight'] }).record.sites.map((s) => s.role), ['position']);
  const byNode = buildTinyBert();
  assert.deepEqual(applyNeftune(byNode, { nodes: ['word_lookup', 'token_type_lookup'] }).record.sites.map((s) => s.lookup), ['word_lookup', 'token_type_lookup']);
  const all = buildTinyBert();
  assert.equal(applyNeftune(all, { allCandidates: true }).record.sites.length, 3);
  assert.throws(() => applyNeftune(buildTinyBert(), { tables: ['nope'] }), (e: unknown) =>
    e instanceof PatchOptionError && /No embedding lookup reads a table named "nope"/.test(e.message) && /word_lookup/.test(e.message));
});

test('two unrelated token tables of the same size are ambiguous: the error lists them and how to choose', () => {
  const b = new ModelBuilder({ opset: 17, irVersion: 8 });
  const a = b.input('query_ids', 'int64', ['batch', 'sequence']);
  const c = b.input('doc_ids', 'int64', ['batch', 'sequence']);
  const t1 = b.initializer('query_table', Tensor.fromArray('float', [10, 4], new Float32Array(40)));
  const t2 = b.initializer('doc_table', Tensor.fromArray('float', [10, 4], new Float32Array(40)));
  b.output(b.op('Add', [b.op('Gather', [t1, a]), b.op('Gather', [t2, c])]), 'float', ['batch', 'sequence', 4]);
  const model = b.build();
  assert.throws(() => applyNeftune(model), (e: unknown) =>
    e instanceof AmbiguousEmbeddingError && e.candidates.length === 2 && /\btables\b/.test(e.message) && !/--table/.test(e.message) && /query_table/.test(e.message));
  assert.equal(applyNeftune(model, { tables: ['doc_table'] }).record.sites.length, 1);
});

test('a model without a default-domain opset import gets one (and a warning); strip removes it', () => {
  const model = buildTinyGpt();
  model.proto.opset_import = [{ domain: 'com.microsoft', version: 1 }];
  const bytes = encodeModel(model);
  const patched = decodeModel(bytes);
  const result = applyNeftune(patched);
  assert.ok(result.record.added.opsetImport);
  assert.ok(result.warnings.some((w) => /added ai.onnx version/.test(w)));
  stripNeftune(patched);
  assert.ok(sameBytes(encodeModel(patched), bytes));
});

test('fused EmbedLayerNormalization is reported with its reason and refused', { skip: skipWithoutFixtures }, () => {
  const model = decodeModel(readFixture('ort_tiny_gpt2_beamsearch_fp16.onnx'));
  const [fused] = findEmbeddings(model).candidates;
  assert.equal(fused!.patchable, false);
  assert.match(fused!.notPatchableReason!, /fused into com.microsoft EmbedLayerNormalization/);
  assert.deepEqual(fused!.graphPath, ['main', 'com.microsoft::BeamSearch "BeamSearch_gpt2".decoder']);
  assert.equal(fused!.table.outerScope, true);
  assert.throws(() => applyNeftune(model, { nodes: ['EmbedLayerNormalization_0'] }), NoEmbeddingError);
});

test('the analysis reports a Gemma-style scale Mul and its factor', () => {
  const [token] = findEmbeddings(buildTinyGemma({ dim: 64 })).candidates;
  assert.equal(token!.scale?.node.name, 'embed_scale_mul');
  assert.equal(token!.scale?.factor, 8);
});

test('a patch record missing newer fields is completed from the model; a malformed one counts as absent', () => {
  const original = encodeModel(buildTinyBert({ dtype: 'float16' }));
  const patched = decodeModel(original);
  applyNeftune(patched, { seed: 3 });
  const record = JSON.parse(patched.metadata.get(PATCH_METADATA_KEY)!) as { sites: Record<string, unknown>[] };
  for (const site of record.sites) { delete site['dtype']; delete site['maskInput']; delete site['afterScale']; }
  patched.metadata.set(PATCH_METADATA_KEY, JSON.stringify(record));
  const completed = readPatchRecord(decodeModel(encodeModel(patched)))!;
  assert.equal(completed.sites[0]!.dtype, 'FLOAT16', 'element type taken from the model');
  assert.equal(completed.sites[0]!.maskInput, null);
  assert.equal(completed.sites[0]!.afterScale, false);

  for (const bad of ['{"sites": 5, "options": {}}', '{"options": {}, "sites": [{"value": 1}]}', 'null', '[]']) {
    const model = decodeModel(encodeModel(patched));
    model.metadata.set(PATCH_METADATA_KEY, bad);
    assert.equal(readPatchRecord(model), undefined, `${bad} is not a usable record`);
    assert.ok(isPatched(model), 'the marked nodes still show the patch');
  }
});
