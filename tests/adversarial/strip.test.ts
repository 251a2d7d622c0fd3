/**
 * Security audit, issue 16: strip must remove exactly what a patch added, recognised by structure
 * and record together; every claim of the record is checked before anything changes; malformed
 * records never crash any reader.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { DataType, ModelBuilder, Node, OnnxNeftuneError, Tensor, Value, decodeModel, encodeModel, type Model } from '../../src/graph/index.js';
import {
  PATCH_METADATA_KEY, PatchMismatchError, RESERVED_PREFIX, applyNeftune, isPatched, readPatchRecord, stripNeftune,
  type NeftuneOptions, type PatchRecord,
} from '../../src/passes/index.js';
import { exitCodeFor, EXIT, type ErrorCode } from '../../cli/exit-codes.js';
import { buildTinyBert, buildTinyGemma, buildTinyGpt, buildTinyT5 } from '../../examples/models.js';
import { runCli, runCliJson, tempDir } from '../cli-helpers.js';
import { firstDifference, sameBytes } from '../helpers.js';

const dir = tempDir('strip-adversarial');
let fileCounter = 0;
function writeModel(bytes: Uint8Array, label: string): string {
  const file = path.join(dir, `${label}-${fileCounter++}.onnx`);
  writeFileSync(file, bytes);
  return file;
}
const read = (file: string) => new Uint8Array(readFileSync(file));

function patch(bytes: Uint8Array, options: NeftuneOptions = {}): Uint8Array {
  const model = decodeModel(bytes);
  applyNeftune(model, options);
  return encodeModel(model);
}

function editRecord(bytes: Uint8Array, edit: (record: PatchRecord) => void): Uint8Array {
  const model = decodeModel(bytes);
  const record = JSON.parse(model.metadata.get(PATCH_METADATA_KEY)!) as PatchRecord;
  edit(record);
  model.metadata.set(PATCH_METADATA_KEY, JSON.stringify(record));
  return encodeModel(model);
}

function editModel(bytes: Uint8Array, edit: (model: Model) => void): Uint8Array {
  const model = decodeModel(bytes);
  edit(model);
  return encodeModel(model);
}

const node = (model: Model, name: string) => model.graph.nodes.find((n) => n.name === name)!;

/** In process: strip throws PatchMismatchError and the model encodes as before. Through the CLI: exit 5, nothing written. */
function assertRefused(bytes: Uint8Array, label: string, message?: RegExp): void {
  const model = decodeModel(bytes);
  const before = encodeModel(model);
  assert.throws(() => stripNeftune(model), (e: unknown) => e instanceof PatchMismatchError && e.code === 'PATCH_MISMATCH' && (!message || message.test(e.message)), label);
  assert.ok(sameBytes(encodeModel(model), before), `${label}: the refused model is unchanged`);
  const input = writeModel(bytes, label.replace(/\W+/g, '_'));
  const output = `${input}.out.onnx`;
  const r = runCli(['strip', input, '-o', output]);
  assert.equal(r.code, EXIT.REFUSED, `${label}: exit code\n${r.stdout}\n${r.stderr}`);
  assert.doesNotMatch(r.stderr, /\n\s+at /, `${label}: no stack trace`);
  assert.equal(existsSync(output), false, `${label}: nothing written`);
  assert.ok(sameBytes(read(input), bytes), `${label}: the input file is untouched`);
}

/** In process and through the CLI: strip gives exactly `expected`. */
function assertStripsTo(bytes: Uint8Array, expected: Uint8Array, label: string): void {
  const model = decodeModel(bytes);
  stripNeftune(model);
  const back = encodeModel(model);
  assert.ok(sameBytes(back, expected), `${label}: first difference at ${firstDifference(back, expected)}`);
  const input = writeModel(bytes, label.replace(/\W+/g, '_'));
  const output = `${input}.out.onnx`;
  const r = runCli(['strip', input, '-o', output]);
  assert.equal(r.code, EXIT.OK, `${label}: exit code\n${r.stdout}\n${r.stderr}`);
  assert.ok(sameBytes(read(output), expected), `${label}: CLI output`);
}

/** A single lookup on a table of any float type, optionally writing a given output name. */
function lookupModel(options: { dtype?: 'float' | 'float16' | 'bfloat16' | 'double'; output?: string; opset?: number; irVersion?: number; mask?: boolean; positions?: boolean } = {}): Model {
  const { dtype = 'float', opset = 17, irVersion = 8 } = options;
  const b = new ModelBuilder({ opset, irVersion, graphName: 'lookup' });
  const ids = b.input('input_ids', 'int64', ['batch', 'sequence']);
  const data = dtype === 'double' ? new Float64Array(64 * 8).map((_, i) => i / 100) : new Float32Array(64 * 8).map((_, i) => i / 100);
  const table = b.initializer('embed.weight', Tensor.fromArray(dtype, [64, 8], data));
  const out = b.op('Gather', [table, ids], { axis: 0 }, { name: 'embed_lookup', outputs: [options.output ?? 'embeds'] });
  let result = dtype === 'float' ? out : b.op('Cast', [out], { to: DataType.FLOAT }, { name: 'to_float' });
  if (options.mask) result = b.op('Mul', [result, b.op('Unsqueeze', [b.op('Cast', [b.input('attention_mask', 'int64', ['batch', 'sequence'])], { to: DataType.FLOAT }), b.constant('axes', 'int64', [1], [2])])]);
  if (options.positions) result = b.op('Add', [result, b.op('Unsqueeze', [b.op('Cast', [b.input('position_ids', 'int64', ['batch', 'sequence'])], { to: DataType.FLOAT }), b.constant('axes2', 'int64', [1], [2])])]);
  b.output(result, 'float', ['batch', 'sequence', 8]);
  return b.build();
}

test('an unpatched model with user nodes named neftune__...: nothing to strip, bytes unchanged, not patched; patch avoids their names and strips back', () => {
  const model = buildTinyGpt();
  // One of them carries exactly the name the patch gives its final Add, another the name of its Shape node.
  const renames: Record<string, string> = { LayerNormalization: `${RESERVED_PREFIX}ln`, Transpose: `${RESERVED_PREFIX}inputs_embeds__add`, MatMul: `${RESERVED_PREFIX}inputs_embeds__shape` };
  for (const n of model.graph) if (renames[n.opType]) n.name = renames[n.opType];
  // And a value named as the patch names the output of its Shape node.
  model.graph.nodes.find((n) => n.opType === 'LayerNormalization')!.outputs[0]!.name = `${RESERVED_PREFIX}inputs_embeds__shape_output`;
  const bytes = encodeModel(model);

  const fresh = decodeModel(bytes);
  assert.equal(isPatched(fresh), false, 'prefix-named user nodes alone are no patch');
  const result = stripNeftune(fresh);
  assert.equal(result.modified, false);
  assert.match(result.message, /Nothing to strip/);
  assert.ok(sameBytes(encodeModel(fresh), bytes));
  assertStripsTo(bytes, bytes, 'user-named nodes, CLI');

  for (const options of [{}, { alphaInput: true, alpha: 2 }, { seed: 5 }]) {
    const patched = decodeModel(bytes);
    const { record } = applyNeftune(patched, options);
    const names = patched.graph.nodes.map((n) => n.name!);
    assert.equal(new Set(names).size, names.length, 'the patch never reuses a user node name');
    const values = patched.graph.nodes.flatMap((n) => n.outputs.map((v) => v!.name));
    assert.equal(new Set(values).size, values.length, 'the patch never reuses a user value name');
    assert.deepEqual(record.userNodes?.slice().sort(), Object.values(renames).sort());
    const patchedBytes = encodeModel(patched);
    assertStripsTo(patchedBytes, bytes, `user-named nodes patched ${JSON.stringify(options)}`);
  }
});

test('a lookup whose own output is named neftune__...: patched, then restored exactly (with and without the record)', () => {
  for (const output of [`${RESERVED_PREFIX}embeds`, `${RESERVED_PREFIX}embeds__clean`]) {
    const bytes = encodeModel(lookupModel({ output }));
    const patched = patch(bytes, { seed: 2 });
    assert.ok(isPatched(decodeModel(patched)));
    assertStripsTo(patched, bytes, `lookup writing ${output}`);
    assertStripsTo(editModel(patched, (m) => m.metadata.delete(PATCH_METADATA_KEY)), bytes, `lookup writing ${output}, record lost`);
  }
});

test('every form the patch emits is recognised: modes, dtypes (bf16 float32 add), after-scale, alpha constant or input, seed, opset forms', () => {
  const builds: Record<string, () => Model> = {
    'float opset 17': () => lookupModel({ mask: true, positions: true }),
    'float16': () => lookupModel({ dtype: 'float16', mask: true, positions: true }),
    'bfloat16': () => lookupModel({ dtype: 'bfloat16', mask: true, positions: true }),
    'double': () => lookupModel({ dtype: 'double', mask: true, positions: true }),
    'opset 9': () => lookupModel({ opset: 9, irVersion: 4, mask: true }),
    'opset 11': () => lookupModel({ opset: 11, irVersion: 6, mask: true }),
    'opset 13': () => lookupModel({ opset: 13, irVersion: 7, mask: true }),
    'packed without mask': () => lookupModel({ positions: true }),
    'gemma fp16': () => buildTinyGemma({ dtype: 'float16' }),
    't5': () => buildTinyT5(),
  };
  const optionSets: NeftuneOptions[] = [
    {}, { seed: 11 }, { alphaInput: true }, { alphaInput: 'anneal', seed: -3 }, { alpha: 0.1 }, { mode: 'mask' }, { mode: 'mask', alphaInput: true },
    { mode: 'packed' }, { mode: 'packed', seed: 1, alphaInput: true }, { afterScale: true }, { afterScale: true, mode: 'mask', seed: 4 },
  ];
  let patchedCount = 0;
  for (const [label, build] of Object.entries(builds)) {
    const bytes = encodeModel(build());
    for (const options of optionSets) {
      const model = decodeModel(bytes);
      try { applyNeftune(model, options); } catch (error) {
        assert.ok(error instanceof OnnxNeftuneError, `${label} ${JSON.stringify(options)}: ${(error as Error).message}`);
        continue;
      }
      patchedCount++;
      const patched = encodeModel(model);
      for (const dropRecord of [false, true]) {
        const m = decodeModel(patched);
        if (dropRecord) m.metadata.delete(PATCH_METADATA_KEY);
        assert.ok(isPatched(m), `${label} ${JSON.stringify(options)} record dropped: ${dropRecord}`);
        stripNeftune(m);
        assert.ok(sameBytes(encodeModel(m), bytes), `${label} ${JSON.stringify(options)} record dropped: ${dropRecord}`);
      }
      // Exactness per form: the same chain with U(-1, 2) instead of U(-1, 1) is not what the patch emits.
      const altered = decodeModel(patched);
      for (const g of altered.allGraphs()) for (const n of g) if (n.opType === 'RandomUniformLike') n.attribute('high')!.proto.f = 2;
      const alteredBytes = encodeModel(altered);
      assert.throws(() => stripNeftune(altered), PatchMismatchError, `${label} ${JSON.stringify(options)}: altered chain`);
      assert.ok(sameBytes(encodeModel(altered), alteredBytes));
    }
  }
  // Floor from the count when it was set (91 of 99): a regression that refuses most forms fails here.
  assert.ok(patchedCount >= 91, `patched ${patchedCount} model/option pairs`);
});

test('record and graph disagree: strip refuses with PatchMismatchError and changes nothing (in process and CLI exit 5)', () => {
  const clean = encodeModel(buildTinyGpt());
  const patched = patch(clean, { seed: 3 });
  const withAlpha = patch(clean, { alphaInput: true });

  assertRefused(editRecord(patched, (r) => { r.sites[0]!.addedNodes[0] = `${RESERVED_PREFIX}ghost`; }), 'a listed node is not there', /neftune__ghost/);
  assertRefused(editRecord(patched, (r) => { r.sites[0]!.addedNodes.push(`${RESERVED_PREFIX}ghost`); }), 'the last listed node is not there', /not in the model/);
  assertRefused(editRecord(patched, (r) => { r.sites[0]!.addedNodes.splice(3, 1); }), 'the record lists fewer nodes than the chain has');
  assertRefused(editRecord(patched, (r) => { r.sites[0]!.clean = 'embeds_clean'; }), 'clean name disagrees', /clean value/);
  assertRefused(editRecord(patched, (r) => { r.options.alpha = 7; }), 'alpha disagrees', /alpha/);
  assertRefused(editRecord(patched, (r) => { r.options.seed = 4; }), 'seed disagrees', /seed/);
  assertRefused(editRecord(patched, (r) => { r.options.mode = 'mask'; r.sites[0]!.maskInput = 'attention_mask'; }), 'mode disagrees');
  assertRefused(editRecord(patched, (r) => { r.sites[0]!.dtype = 'FLOAT16'; }), 'dtype disagrees');

  // A node outside the patch reads a value inside the chain: with the record, and with it lost.
  const extraReader = editModel(patched, (m) => {
    const scale = node(m, `${RESERVED_PREFIX}inputs_embeds__scale`).outputs[0]!;
    const out = new Value('scale_probe');
    m.graph.append(new Node('Identity', [scale], [out], { name: 'probe' }));
    m.graph.addOutput(out).info = { name: 'scale_probe' };
  });
  assertRefused(extraReader, 'extra reader of a chain value', /also read by Identity "probe"/);
  assertRefused(editModel(extraReader, (m) => m.metadata.delete(PATCH_METADATA_KEY)), 'extra reader of a chain value, record lost', /also read by/);

  // An unmarked node in the chain (renamed in the graph and in the record alike).
  assertRefused(editRecord(editModel(patched, (m) => { node(m, `${RESERVED_PREFIX}inputs_embeds__sqrt_L_times_d`).name = 'my_sqrt'; }),
    (r) => { r.sites[0]!.addedNodes = r.sites[0]!.addedNodes.map((n) => n === `${RESERVED_PREFIX}inputs_embeds__sqrt_L_times_d` ? 'my_sqrt' : n); }),
  'unmarked node in the chain', /my_sqrt.*not named with the patch's prefix/);

  // A marked node no site explains: the record lost one of two sites.
  const t5 = encodeModel(buildTinyT5());
  assertRefused(editRecord(patch(t5), (r) => { r.sites.pop(); }), 'record omits a site', /in no recorded site/);
  // The alpha input is in the record but not in the graph's chain, and the other way round.
  assertRefused(editRecord(withAlpha, (r) => { r.added.graphInputs = []; }), 'alpha input not listed', /graph inputs/);
  assertRefused(editRecord(withAlpha, (r) => { r.added.graphInputs.push('input_ids'); }), 'extra graph input listed', /input_ids/);
});

test('a forged record on an unpatched model removes nothing: not its inputs, not its opset (in process and CLI)', () => {
  const clean = encodeModel(buildTinyGpt());
  const record = readPatchRecord(decodeModel(patch(clean, { alphaInput: true })))!;
  record.added = { graphInputs: ['input_ids'], opsetImport: true };
  const forged = editModel(clean, (m) => m.metadata.set(PATCH_METADATA_KEY, JSON.stringify(record)));
  assertRefused(forged, 'forged record on an unpatched model');
  // isPatched trusts a readable record (so patch refuses), and a re-patch fails typed without change.
  const m = decodeModel(forged);
  assert.equal(isPatched(m), true);
  assert.throws(() => applyNeftune(m, { repatch: true }), PatchMismatchError);
  assert.ok(sameBytes(encodeModel(m), forged));
});

test('record claims on a genuine patch are checked: a false added input or opset import claim is refused', () => {
  // A user float scalar input the model reads itself.
  const b = new ModelBuilder({ opset: 17, irVersion: 8 });
  const ids = b.input('input_ids', 'int64', ['batch', 'sequence']);
  const temperature = b.input('temperature', 'float', []);
  const table = b.initializer('embed.weight', Tensor.fromArray('float', [16, 4], new Float32Array(64)));
  b.output(b.op('Mul', [b.op('Gather', [table, ids], { axis: 0 }, { name: 'lookup' }), temperature]), 'float', ['batch', 'sequence', 4]);
  const clean = encodeModel(b.build());
  const patched = patch(clean);
  assertRefused(editRecord(patched, (r) => { r.added.graphInputs = ['temperature']; }), 'record claims a user input', /temperature/);
  // The model has its own opset 17 import; the record's flipped claim must not remove it.
  assertRefused(editRecord(patched, (r) => { r.added.opsetImport = true; }), 'record claims the opset import', /opset import/);
  const withAlpha = patch(clean, { alphaInput: true });
  assertRefused(editModel(withAlpha, (m) => { m.graph.inputs.find((v) => v.name === 'neftune_alpha')!.info = { name: 'neftune_alpha', type: { tensor_type: { elem_type: DataType.FLOAT, shape: { dim: [{ dim_value: 2 }] } } } }; }),
    'added alpha input is not a scalar', /not a float scalar/);
});

test('two patch records: identical copies count as one (strip removes both); differing ones are refused', () => {
  const clean = encodeModel(buildTinyBert());
  const patched = patch(clean, { mode: 'mask' });
  const text = decodeModel(patched).metadata.get(PATCH_METADATA_KEY)!;
  const twice = editModel(patched, (m) => { m.proto.metadata_props!.push({ key: PATCH_METADATA_KEY, value: text }); });
  assert.ok(readPatchRecord(decodeModel(twice)));
  assertStripsTo(twice, clean, 'identical duplicate records');
  const other = JSON.parse(text) as PatchRecord;
  other.options.alpha = 10;
  const differing = editModel(patched, (m) => { m.proto.metadata_props!.push({ key: PATCH_METADATA_KEY, value: JSON.stringify(other) }); });
  const m = decodeModel(differing);
  assert.equal(readPatchRecord(m), undefined, 'conflicting records are no record to readers');
  assert.equal(isPatched(m), true);
  assertRefused(differing, 'differing duplicate records', /2 metadata entries/);
  assert.throws(() => applyNeftune(decodeModel(differing), { repatch: true }), PatchMismatchError);
});

const MALFORMED: Record<string, (valid: string) => string> = {
  'added missing': (t) => { const r = JSON.parse(t); delete r.added; return JSON.stringify(r); },
  'added is an array': (t) => { const r = JSON.parse(t); r.added = []; return JSON.stringify(r); },
  'added.graphInputs not a string array': (t) => { const r = JSON.parse(t); r.added.graphInputs = [1, { x: 1 }]; return JSON.stringify(r); },
  'added.graphInputs a string': (t) => { const r = JSON.parse(t); r.added.graphInputs = 'neftune_alpha'; return JSON.stringify(r); },
  'sites not objects': (t) => { const r = JSON.parse(t); r.sites = [1, 'x']; return JSON.stringify(r); },
  'addedNodes with non-strings': (t) => { const r = JSON.parse(t); r.sites[0].addedNodes.push(7, null); return JSON.stringify(r); },
  'options missing': (t) => { const r = JSON.parse(t); delete r.options; return JSON.stringify(r); },
  'alpha a string': (t) => { const r = JSON.parse(t); r.options.alpha = '5'; return JSON.stringify(r); },
  'userNodes not a string array': (t) => { const r = JSON.parse(t); r.userNodes = [[1]]; return JSON.stringify(r); },
  'an array': () => '[1, 2, 3]',
  'a number': () => '42',
  'a string': () => '"patched"',
  'null': () => 'null',
  'not JSON': (t) => t.slice(0, t.length / 2),
  '10 MB': (t) => { const r = JSON.parse(t); r.sites = new Array(2_500_000).fill(7); return JSON.stringify(r); },
  'deeply nested': () => `{"options":${'['.repeat(200_000)}${']'.repeat(200_000)}}`,
};

test('malformed records never crash strip, re-patch, isPatched or readPatchRecord: treated as absent, the patch is found by structure', () => {
  const clean = encodeModel(buildTinyGpt());
  const options: NeftuneOptions = { seed: 9, alphaInput: true };
  const patched = patch(clean, options);
  const direct = patch(clean, { ...options, alpha: 3 });
  const valid = decodeModel(patched).metadata.get(PATCH_METADATA_KEY)!;
  for (const [label, corrupt] of Object.entries(MALFORMED)) {
    const bytes = editModel(patched, (m) => m.metadata.set(PATCH_METADATA_KEY, corrupt(valid)));
    const m = decodeModel(bytes);
    assert.equal(readPatchRecord(m), undefined, label);
    assert.equal(isPatched(m), true, `${label}: the chain still shows the patch`);
    const stripped = stripNeftune(m);
    assert.match(stripped.message, /unreadable/, label);
    assert.ok(sameBytes(encodeModel(m), clean), `${label}: strip recovers the original by structure`);
    const repatched = decodeModel(bytes);
    applyNeftune(repatched, { ...options, alpha: 3, repatch: true });
    assert.ok(sameBytes(encodeModel(repatched), direct), `${label}: re-patch equals patching the clean model`);
    // The same record on an unpatched model: nothing to strip, nothing changed, and patch goes ahead.
    const unpatched = editModel(clean, (x) => x.metadata.set(PATCH_METADATA_KEY, corrupt(valid)));
    const u = decodeModel(unpatched);
    assert.equal(isPatched(u), false, label);
    assert.equal(stripNeftune(u).modified, false, label);
    assert.ok(sameBytes(encodeModel(u), unpatched), label);
    applyNeftune(u, options);
    assert.ok(readPatchRecord(u), `${label}: patch replaces the unreadable entry`);
  }
  // Through the CLI: strip, inspect and re-patch of two of them (the CLI records its flag defaults too).
  const patchArgs = ['--alpha', '3', '--seed', '9', '--alpha-input'];
  const cleanFile = writeModel(clean, 'clean');
  assert.equal(runCli(['patch', cleanFile, '-o', `${cleanFile}.patched.onnx`, ...patchArgs]).code, EXIT.OK);
  const directCli = read(`${cleanFile}.patched.onnx`);
  for (const label of ['added missing', 'deeply nested']) {
    const input = writeModel(editModel(patched, (m) => m.metadata.set(PATCH_METADATA_KEY, MALFORMED[label]!(valid))), 'malformed');
    assertStripsTo(read(input), clean, `${label}, CLI`);
    assert.equal(runCliJson(['inspect', input]).code, EXIT.OK, `${label}: inspect`);
    const r = runCli(['patch', input, '-o', `${input}.re.onnx`, '--repatch', ...patchArgs]);
    assert.equal(r.code, EXIT.OK, `${label}: repatch\n${r.stderr}`);
    assert.ok(sameBytes(read(`${input}.re.onnx`), directCli), `${label}: CLI re-patch`);
  }
});

/** Where the record's JSON text sits in the encoded model. */
function recordSpan(bytes: Uint8Array): [number, number] {
  const text = decodeModel(bytes).metadata.get(PATCH_METADATA_KEY)!;
  const needle = Buffer.from(text, 'utf8');
  const start = Buffer.from(bytes).indexOf(needle);
  assert.ok(start > 0);
  return [start, start + needle.length];
}

test('flipped bits in the record: strip, re-patch, inspect and verify give typed errors or correct results, never exit 1', { timeout: 600_000 }, () => {
  const clean = encodeModel(buildTinyBert());
  const options: NeftuneOptions = { mode: 'mask', seed: 7, alphaInput: true };
  const patched = patch(clean, options);
  const direct = patch(clean, { ...options, alpha: 2 });
  const [start, end] = recordSpan(patched);
  const outcomes = { refused: 0, recovered: 0, exact: 0 };
  const variants: Uint8Array[] = [];
  for (let i = start; i < end; i++) {
    const bytes = patched.slice();
    bytes[i]! ^= 1 << (i % 8);
    variants.push(bytes);
    const label = `bit ${i % 8} of byte ${i - start} ("${String.fromCharCode(patched[i]!)}")`;
    const model = decodeModel(bytes);
    const before = encodeModel(model);
    isPatched(model);
    readPatchRecord(model);
    try {
      const result = stripNeftune(model);
      assert.ok(sameBytes(encodeModel(model), clean), `${label}: a successful strip restores the original`);
      if (/unreadable/.test(result.message)) outcomes.recovered++; else outcomes.exact++;
    } catch (error) {
      assert.ok(error instanceof OnnxNeftuneError && exitCodeFor(error.code as ErrorCode) !== EXIT.INTERNAL, `${label}: ${(error as Error).stack}`);
      assert.ok(sameBytes(encodeModel(model), before), `${label}: a refused strip changes nothing`);
      outcomes.refused++;
    }
    const again = decodeModel(bytes);
    try {
      applyNeftune(again, { ...options, alpha: 2, repatch: true });
      assert.ok(sameBytes(encodeModel(again), direct), `${label}: a re-patch equals patching the clean model`);
    } catch (error) {
      assert.ok(error instanceof OnnxNeftuneError && exitCodeFor(error.code as ErrorCode) !== EXIT.INTERNAL, `${label}: ${(error as Error).stack}`);
      assert.ok(sameBytes(encodeModel(again), before), `${label}: a refused re-patch changes nothing`);
    }
  }
  // Each kind of outcome happens: the test exercises refusals, structural recovery and record-led strips.
  assert.ok(outcomes.refused > 10 && outcomes.recovered > 10 && outcomes.exact > 0, JSON.stringify(outcomes));

  // Through the CLI, a spread of them (verify on two: it runs ONNX Runtime).
  const step = Math.max(1, Math.floor(variants.length / 12));
  let verified = 0;
  for (let k = 0; k < variants.length; k += step) {
    const input = writeModel(variants[k]!, 'flipped');
    const s = runCli(['strip', input, '-o', `${input}.out.onnx`]);
    assert.ok(s.code === EXIT.OK || s.code === EXIT.REFUSED, `strip exit ${s.code}\n${s.stderr}`);
    if (s.code === EXIT.OK) assert.ok(sameBytes(read(`${input}.out.onnx`), clean));
    else assert.equal(existsSync(`${input}.out.onnx`), false);
    assert.equal(runCli(['inspect', input]).code, EXIT.OK);
    const p = runCli(['patch', input, '-o', `${input}.re.onnx`, '--repatch', '--mode', 'mask', '--seed', '7', '--alpha', '2', '--alpha-input']);
    assert.ok(p.code === EXIT.OK || p.code === EXIT.REFUSED, `repatch exit ${p.code}\n${p.stderr}`);
    if (verified < 2 && (s.code === EXIT.REFUSED || verified === 0)) {
      const v = runCli(['verify', input, '--runs', '2']);
      assert.ok([EXIT.OK, EXIT.REFUSED, EXIT.VERIFY_FAILED, EXIT.VERIFY_UNABLE].includes(v.code as 0), `verify exit ${v.code}\n${v.stdout}\n${v.stderr}`);
      assert.doesNotMatch(v.stderr, /\n\s+at /);
      verified++;
    }
  }
});

test('re-patch of a model without a default-domain opset import (the patch added it and recorded so)', () => {
  // A Gather model that imports no opset at all, and a contrib-only model (GatherBlockQuantized).
  const noImports = buildTinyGpt();
  delete noImports.proto.opset_import;
  const b = new ModelBuilder({ opset: 17, irVersion: 8, opsets: { 'com.microsoft': 1 } });
  const ids = b.input('input_ids', 'int64', ['batch', 'sequence']);
  const data = b.initializer('data', Tensor.fromArray('uint8', [64, 8], new Uint8Array(512)));
  const scales = b.initializer('scales', Tensor.fromArray('float', [64, 1], new Float32Array(64).fill(1)));
  b.output(b.op('GatherBlockQuantized', [data, ids, scales], { block_size: 16, gather_axis: 0, quantize_axis: 1 }, { domain: 'com.microsoft', outputs: ['embeds'] }), 'float', ['batch', 'sequence', 16]);
  const contribOnly = b.build();
  contribOnly.proto.opset_import = [{ domain: 'com.microsoft', version: 1 }];
  for (const [label, model] of [['no opset imports', noImports], ['contrib ops only', contribOnly]] as const) {
    const clean = encodeModel(model);
    const patched = patch(clean, { seed: 1 });
    assert.equal(readPatchRecord(decodeModel(patched))!.added.opsetImport, true);
    const repatched = decodeModel(patched);
    applyNeftune(repatched, { alpha: 10, repatch: true });
    assert.ok(sameBytes(encodeModel(repatched), patch(clean, { alpha: 10 })), `${label}: re-patch equals patching the clean model`);
    assertStripsTo(patched, clean, label);
    const input = writeModel(patched, 'no-opset');
    const r = runCli(['patch', input, '-o', `${input}.re.onnx`, '--repatch', '--alpha', '10']);
    assert.equal(r.code, EXIT.OK, `${label}: CLI re-patch\n${r.stderr}`);
  }
});

test('patching over an unreadable record entry keeps it: strip puts it back in place, byte for byte', () => {
  for (const value of ['{"tool": "onnx-neftune", "sites": [', '', undefined]) {
    const model = buildTinyGpt();
    model.metadata.set('before', '1');
    model.proto.metadata_props!.push(value === undefined ? { key: PATCH_METADATA_KEY } : { key: PATCH_METADATA_KEY, value });
    model.metadata.set('after', '2');
    const original = encodeModel(model);
    const m = decodeModel(original);
    assert.equal(isPatched(m), false, 'an unreadable record alone is no patch');
    applyNeftune(m);
    const patched = decodeModel(encodeModel(m));
    assert.deepEqual(patched.metadata.entries.map((e) => e.key), ['before', PATCH_METADATA_KEY, 'after'], 'the record takes the entry\'s place');
    stripNeftune(patched);
    assert.ok(sameBytes(encodeModel(patched), original), `value ${JSON.stringify(value)}: first difference at ${firstDifference(encodeModel(patched), original)}`);
  }
});

test('a forged sourceNode in the record (garbage, or another node\'s bytes) is not adopted: strip still restores the original', () => {
  const original = encodeModel(buildTinyGpt());
  const other = decodeModel(original).graph.nodes.find((n) => n.name === 'wpe_lookup')!.sourceBytes()!;
  for (const forged of ['//8=', btoa('\x0a\xff\xff\xff\xff\x0f'), btoa(String.fromCharCode(...other))]) {
    const m = decodeModel(original);
    applyNeftune(m, { seed: 1 });
    const patched = decodeModel(encodeModel(m));
    const record = JSON.parse(patched.metadata.get(PATCH_METADATA_KEY)!);
    record.sites[0].sourceNode = forged;
    patched.metadata.set(PATCH_METADATA_KEY, JSON.stringify(record));
    assert.equal(stripNeftune(patched).modified, true);
    assert.ok(sameBytes(encodeModel(patched), original), `forged ${forged.slice(0, 12)}: first difference at ${firstDifference(encodeModel(patched), original)}`);
  }
});
