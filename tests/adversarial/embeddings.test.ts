/**
 * Hostile models for the embedding analysis and target choice (security audit, issue 16): huge
 * lookup and table counts, malformed lookups and tables, names that are Object.prototype keys.
 * Every model is built with the project's builder (or edited from one) and run through the real
 * library and the real CLI.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, unlinkSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { ModelBuilder, OnnxModelError, Tensor, decodeModel, encodeModel, type Model, type Value } from '../../src/graph/index.js';
import { applyNeftune, findEmbeddings, selectTargets, normalizeOptions } from '../../src/passes/index.js';
import { readModelFile } from '../../src/io/index.js';
import { buildTinyGemma } from '../../examples/models.js';
import { runCli, runCliJson, tempDir } from '../cli-helpers.js';

const dir = tempDir('adv-embeddings');
let fileCount = 0;
function writeModel(model: Model | Uint8Array, name = 'model'): string {
  const file = path.join(dir, `${name}-${fileCount++}.onnx`);
  writeFileSync(file, model instanceof Uint8Array ? model : encodeModel(model));
  return file;
}
const roundTrip = (model: Model): Model => decodeModel(encodeModel(model));
const floats = (n: number) => new Float32Array(n);

/** input_ids -> Gather(table) -> output: the smallest model with a token lookup. */
function tokenModel(options: { table?: Tensor; tableName?: string; idsType?: string; idsName?: string; nodeName?: string; outputName?: string } = {}): Model {
  const b = new ModelBuilder({ opset: 17, irVersion: 8 });
  const ids = b.input(options.idsName ?? 'input_ids', options.idsType ?? 'int64', ['batch', 'sequence']);
  const table = b.initializer(options.tableName ?? 'wte', options.table ?? Tensor.fromArray('float', [10, 4], floats(40)));
  const emb = b.op('Gather', [table, ids], { axis: 0 }, { name: options.nodeName ?? 'wte_lookup', outputs: [options.outputName ?? 'embeds'] });
  b.output(emb, 'float', ['batch', 'sequence', 4]);
  return b.build();
}

/** Patch through the CLI: the exit code, and that no output file was written. */
function cliPatch(file: string, extra: string[] = []): { code: number; written: boolean; json: any } {
  const out = path.join(dir, `out-${fileCount++}.onnx`);
  const r = runCliJson(['patch', file, '-o', out, ...extra]);
  return { code: r.code, written: existsSync(out), json: r.json };
}

// ---------------------------------------------------------------------------------------------
// 1. Target choice is linear in the number of lookups and tables.

function oneTableManyLookups(lookups: number): Model {
  const b = new ModelBuilder({ opset: 17, irVersion: 8 });
  const ids = b.input('input_ids', 'int64', ['batch', 'sequence']);
  const table = b.initializer('wte', Tensor.fromArray('float', [10, 4], floats(40)));
  let last: Value | undefined;
  for (let i = 0; i < lookups; i++) last = b.op('Gather', [table, ids], { axis: 0 });
  b.output(last!, 'float', ['batch', 'sequence', 4]);
  return b.build();
}

/**
 * Runs `body` (an ES module body; `graph` and `passes` are the library's modules) in a child Node
 * and returns the JSON it prints. A synchronous loop cannot be stopped by a test's `timeout`; the
 * child is killed at `timeoutMs`, so a quadratic regression fails instead of hanging the suite.
 */
function runJob(body: string, timeoutMs: number): any {
  const url = (p: string) => JSON.stringify(new URL(p, import.meta.url).href);
  const source = `const graph = await import(${url('../../src/graph/index.js')});\nconst passes = await import(${url('../../src/passes/index.js')});\n${body}`;
  const r = spawnSync(process.execPath, ['--max-old-space-size=8192', '--input-type=module', '-e', source], { timeout: timeoutMs, maxBuffer: 1 << 24 });
  assert.equal(r.error, undefined, `the job did not finish within ${timeoutMs / 1000} s (${r.error?.message})`);
  assert.equal(r.status, 0, r.stderr.toString());
  return JSON.parse(r.stdout.toString());
}

test('one table read by 200,000 Gather lookups: analysis and patch finish', { timeout: 330_000 }, () => {
  const out = runJob(`
    const { ModelBuilder, Tensor } = graph;
    const b = new ModelBuilder({ opset: 17, irVersion: 8 });
    const ids = b.input('input_ids', 'int64', ['batch', 'sequence']);
    const table = b.initializer('wte', Tensor.fromArray('float', [10, 4], new Float32Array(40)));
    const names = [];
    let last;
    for (let i = 0; i < 200000; i++) { names.push('lookup_' + i); last = b.op('Gather', [table, ids], { axis: 0 }, { name: names[i] }); }
    b.output(last, 'float', ['batch', 'sequence', 4]);
    const model = b.build();
    const report = passes.findEmbeddings(model);
    // What inspect --json derives per candidate, with a set instead of a scan of the target list.
    const targets = new Set(report.defaultTarget);
    const marked = report.candidates.filter((c) => targets.has(c)).length;
    const byName = passes.selectTargets(report, passes.normalizeOptions({ tables: ['wte'], nodes: names }));
    const result = passes.applyNeftune(model);
    console.log(JSON.stringify({ candidates: report.candidates.length, targets: report.defaultTarget.length, marked, byName: byName.length, reason: report.targetReason, sites: result.record.sites.length }));
  `, 300_000);
  assert.equal(out.candidates, 200_000);
  assert.equal(out.targets, 200_000);
  assert.equal(out.marked, 200_000);
  assert.equal(out.byName, 200_000);
  assert.match(out.reason, /token table "wte" \(10 rows\), read by 200000 lookups/);
  assert.equal(out.sites, 200_000);
});

/**
 * Counts the array elements that the common array methods and spreads walk while `f` runs: a
 * measure of work that does not depend on the machine's speed.
 */
function arrayElementsWalked(f: () => void): number {
  const proto = Array.prototype as unknown as Record<string | symbol, (...args: unknown[]) => unknown>;
  const names: Array<string | symbol> = ['includes', 'indexOf', 'filter', 'find', 'findIndex', 'some', 'every', 'map', 'flatMap', 'slice', 'concat', Symbol.iterator];
  const saved = names.map((n) => proto[n]!);
  let walked = 0;
  names.forEach((n, i) => {
    const original = saved[i]!;
    proto[n] = function (this: unknown[], ...args: unknown[]) { walked += this.length; return original.apply(this, args); };
  });
  try {
    f();
  } finally {
    names.forEach((n, i) => { proto[n] = saved[i]!; });
  }
  return walked;
}

function manyTables(count: number, options: { asInputs?: boolean; bigFirst?: boolean } = {}): Model {
  const b = new ModelBuilder({ opset: 17, irVersion: 8 });
  const ids = b.input('input_ids', 'int64', ['batch', 'sequence']);
  const small = Tensor.fromArray('float', [10, 4], floats(40));
  let sum: Value | undefined;
  for (let i = 0; i < count; i++) {
    const rows = options.bigFirst && i === 0 ? 11 : 10;
    const tensor = rows === 10 ? new Tensor({ ...small.proto }) : Tensor.fromArray('float', [rows, 4], floats(rows * 4));
    const table = b.initializer(`table_${i}`, tensor, { asInput: options.asInputs ?? false });
    const emb = b.op('Gather', [table, ids], { axis: 0 }, { name: `lookup_${i}` });
    sum = sum ? b.op('Add', [sum, emb]) : emb;
  }
  b.output(sum!, 'float', ['batch', 'sequence', 4]);
  return b.build();
}

test('analysis and explicit selection scale linearly (array elements walked, not time)', () => {
  const n = 2_000;
  const cases: Array<{ name: string; build: (n: number) => Model; select?: (n: number) => string[] }> = [
    { name: 'one table, many lookups', build: oneTableManyLookups },
    { name: 'many tables that are graph inputs', build: (k) => manyTables(k, { asInputs: true, bigFirst: true }) },
    { name: 'many lookups chosen by node name', build: (k) => manyTables(k), select: (k) => Array.from({ length: k }, (_, i) => `lookup_${i}`) },
  ];
  for (const c of cases) {
    const measure = (k: number) => {
      const model = c.build(k);
      return arrayElementsWalked(() => {
        const report = findEmbeddings(model);
        if (c.select) selectTargets(report, normalizeOptions({ nodes: c.select(k) }));
      });
    };
    const small = measure(n);
    const large = measure(4 * n);
    // Linear work grows about 4x; the quadratic versions grew 16x.
    assert.ok(large < 6 * small, `${c.name}: ${small} elements walked for ${n}, ${large} for ${4 * n}`);
  }
});

test('130,000 tables each read by one lookup: no stack overflow, a typed answer', { timeout: 330_000 }, () => {
  const out = runJob(`
    const { ModelBuilder, Tensor } = graph;
    const build = (largestFirst) => {
      const b = new ModelBuilder({ opset: 17, irVersion: 8 });
      const ids = b.input('input_ids', 'int64', ['batch', 'sequence']);
      let sum;
      for (let i = 0; i < 130000; i++) {
        const rows = largestFirst && i === 0 ? 11 : 10;
        const table = b.initializer('table_' + i, Tensor.fromArray('float', [rows, 4], new Float32Array(rows * 4)));
        const emb = b.op('Gather', [table, ids], { axis: 0 }, { name: 'lookup_' + i });
        sum = sum ? b.op('Add', [sum, emb]) : emb;
      }
      b.output(sum, 'float', ['batch', 'sequence', 4]);
      return b.build();
    };
    const tied = build(false);
    const report = passes.findEmbeddings(tied);
    let refusal;
    try { passes.applyNeftune(tied); } catch (e) { refusal = { name: e.constructor.name, code: e.code, length: e.message.length }; }
    const result = passes.applyNeftune(build(true));
    console.log(JSON.stringify({ candidates: report.candidates.length, ambiguous: report.ambiguous, reasonLength: report.targetReason.length, refusal, tables: result.record.sites.map((s) => s.table) }));
  `, 300_000);
  assert.equal(out.candidates, 130_000);
  assert.equal(out.ambiguous, true);
  assert.ok(out.reasonLength < 2_000, 'the reason names a few tables, not 130,000');
  assert.equal(out.refusal?.code, 'AMBIGUOUS_EMBEDDING');
  assert.ok(out.refusal.length < 20_000, `the refusal lists a few candidates, not 130,000 (${out.refusal.length} characters)`);
  assert.deepEqual(out.tables, ['table_0']);
});

// ---------------------------------------------------------------------------------------------
// 2. Crashes that are typed errors now.

test('a lookup with no output, or an empty output name, is reported and refused as an invalid model', () => {
  const noOutput = (() => {
    const b = new ModelBuilder({ opset: 17, irVersion: 8 });
    const ids = b.input('input_ids', 'int64', ['batch', 'sequence']);
    const table = b.initializer('wte', Tensor.fromArray('float', [10, 4], floats(40)));
    b.node('Gather', [table, ids], { axis: 0 }, { name: 'wte_lookup', outputCount: 0 });
    return b.build();
  })();
  const emptyName = tokenModel();
  emptyName.graph.first!.outputs[0]!.name = '';
  for (const [label, model, why] of [['no output', noOutput, /has no output/], ['empty output name', emptyName, /empty output name/]] as const) {
    for (const m of [model, roundTrip(model)]) {
      const [c] = findEmbeddings(m).candidates;
      assert.equal(c!.patchable, false, label);
      assert.match(c!.invalidReason!, m === model ? why : /no output|empty output name/, label);
      assert.throws(() => applyNeftune(m), (e: unknown) => e instanceof OnnxModelError && /wte_lookup/.test(e.message), label);
      assert.throws(() => applyNeftune(m, { nodes: ['wte_lookup'] }), OnnxModelError, label);
      assert.throws(() => applyNeftune(m, { tables: ['wte'] }), OnnxModelError, label);
    }
    const file = writeModel(model);
    const patched = cliPatch(file);
    assert.equal(patched.code, 4, `${label}: ${JSON.stringify(patched.json.files[0]?.error)}`);
    assert.equal(patched.written, false);
    assert.equal(patched.json.files[0].error.code, 'ONNX_MODEL');
    const inspected = runCliJson(['inspect', file]);
    assert.equal(inspected.code, 0);
    assert.match(inspected.json.files[0].model.embeddings.candidates[0].notPatchableReason, /no output|empty output name/);
  }
});

function gemmaWithScaleBytes(bytes: number): Model {
  const model = buildTinyGemma({ dim: 16 });
  const scale = model.graph.initializer('model.embed_scale')!.initializer!;
  scale.proto.raw_data = new Uint8Array(bytes);
  return roundTrip(model);
}

test('a scale constant with a payload of the wrong size: reported, refused for --after-scale, warned otherwise', () => {
  for (const bytes of [0, 3, 5, 8]) {
    const model = gemmaWithScaleBytes(bytes);
    const [token] = findEmbeddings(model).candidates;
    assert.equal(token!.scale?.node.name, 'embed_scale_mul');
    assert.equal(token!.scale?.factor, undefined);
    assert.match(token!.scale!.invalidReason!, new RegExp(`"model.embed_scale" is FLOAT \\[\\], which needs 4 bytes, but raw_data holds ${bytes}`));
    assert.throws(() => applyNeftune(gemmaWithScaleBytes(bytes), { afterScale: true }), (e: unknown) => e instanceof OnnxModelError && /model\.embed_scale/.test(e.message));
    const before = applyNeftune(model);
    assert.ok(before.warnings.some((w) => /model\.embed_scale/.test(w)), `${bytes} bytes: ${before.warnings.join(' | ')}`);
  }
  const file = writeModel(gemmaWithScaleBytes(3));
  const inspected = runCliJson(['inspect', file]);
  assert.equal(inspected.code, 0);
  assert.ok(inspected.json.files[0].model.embeddings.candidates[0].reasons.some((r: string) => /model\.embed_scale.*holds 3/.test(r)));
  const patched = cliPatch(file, ['--after-scale']);
  assert.equal(patched.code, 4);
  assert.equal(patched.written, false);
  // A well-formed scale still gives its factor.
  assert.equal(findEmbeddings(buildTinyGemma({ dim: 16 })).candidates[0]!.scale?.factor, 4);
});

test('values, tables and nodes named __proto__, constructor, hasOwnProperty are plain names', () => {
  for (const name of ['__proto__', 'constructor', 'hasOwnProperty']) {
    for (const where of ['table', 'node', 'ids', 'output'] as const) {
      const model = roundTrip(tokenModel({
        ...(where === 'table' ? { tableName: name } : {}), ...(where === 'node' ? { nodeName: name } : {}),
        ...(where === 'ids' ? { idsName: name } : {}), ...(where === 'output' ? { outputName: name } : {}),
      }));
      const report = findEmbeddings(model);
      assert.equal(report.defaultTarget.length, 1, `${where} ${name}: ${report.targetReason}`);
      const table = where === 'table' ? name : 'wte';
      const node = where === 'node' ? name : 'wte_lookup';
      for (const options of [{}, { tables: [table] }, { nodes: [node] }, { tables: [table], nodes: [node] }]) {
        const result = applyNeftune(roundTrip(model), options);
        assert.equal(result.record.sites.length, 1, `${where} ${name} ${JSON.stringify(options)}`);
      }
      assert.throws(() => applyNeftune(roundTrip(tokenModel()), { tables: [name] }), /No embedding lookup reads a table named/);
      assert.throws(() => applyNeftune(roundTrip(tokenModel()), { nodes: [name] }), /No embedding lookup node is named/);
    }
    // Two tables tied for the token role, one of them named like a prototype key.
    const b = new ModelBuilder({ opset: 17, irVersion: 8 });
    const ids = b.input('input_ids', 'int64', ['batch', 'sequence']);
    const t1 = b.initializer(name, Tensor.fromArray('float', [10, 4], floats(40)));
    const t2 = b.initializer('other', Tensor.fromArray('float', [10, 4], floats(40)));
    b.output(b.op('Add', [b.op('Gather', [t1, ids], { axis: 0 }), b.op('Gather', [t2, ids], { axis: 0 })]), 'float', ['batch', 'sequence', 4]);
    const tie = findEmbeddings(roundTrip(b.build()));
    assert.equal(tie.ambiguous, true);
    assert.match(tie.targetReason, new RegExp(`"${name}"`));
  }
  const file = writeModel(tokenModel({ tableName: '__proto__', nodeName: 'constructor', idsName: 'hasOwnProperty' }));
  const inspected = runCliJson(['inspect', file]);
  assert.equal(inspected.code, 0);
  assert.equal(inspected.json.files[0].model.embeddings.candidates[0].table.name, '__proto__');
  assert.equal(cliPatch(file, ['--table', '__proto__', '--node', 'constructor']).code, 0);
});

// ---------------------------------------------------------------------------------------------
// 3. Tables and indices are validated where the pass reads them.

const badTables: Array<{ label: string; tensor: () => Tensor; why: RegExp }> = [
  { label: 'negative dim', tensor: () => new Tensor({ dims: [-5, 4], data_type: 1, raw_data: new Uint8Array(0) }), why: /"wte" has dims \[-5, 4\]: a dimension is negative/ },
  { label: '2^40 rows', tensor: () => new Tensor({ dims: [2 ** 40, 4], data_type: 1, raw_data: new Uint8Array(64) }), why: /"wte" is FLOAT \[1099511627776, 4\], which needs 17592186044416 bytes, but raw_data holds 64/ },
  { label: 'raw_data too long', tensor: () => new Tensor({ dims: [10, 4], data_type: 1, raw_data: new Uint8Array(164) }), why: /needs 160 bytes, but raw_data holds 164/ },
  { label: 'raw_data too short', tensor: () => new Tensor({ dims: [10, 4], data_type: 10, raw_data: new Uint8Array(79) }), why: /FLOAT16 \[10, 4\], which needs 80 bytes, but raw_data holds 79/ },
  { label: 'float_data too short', tensor: () => new Tensor({ dims: [10, 4], data_type: 1, float_data: [1, 2, 3] }), why: /needs 160 bytes, but float_data holds 12/ },
  { label: 'no data', tensor: () => new Tensor({ dims: [10, 4], data_type: 1 }), why: /needs 160 bytes, but the tensor \(no data field\) holds 0/ },
];

test('tables with impossible dims or a payload of the wrong size are invalid candidates, never targets', () => {
  for (const bad of badTables) {
    for (const model of [tokenModel({ table: bad.tensor() }), roundTrip(tokenModel({ table: bad.tensor() }))]) {
      const report = findEmbeddings(model);
      const [c] = report.candidates;
      assert.equal(c!.role, 'token', bad.label);
      assert.equal(c!.patchable, false, bad.label);
      assert.match(c!.invalidReason!, bad.why, bad.label);
      assert.match(c!.notPatchableReason!, bad.why, bad.label);
      assert.deepEqual(report.defaultTarget, [], bad.label);
      assert.match(report.targetReason, bad.why, bad.label);
      for (const options of [{}, { tables: ['wte'] }, { nodes: ['wte_lookup'] }, { allCandidates: true }]) {
        assert.throws(() => applyNeftune(model, options), (e: unknown) => e instanceof OnnxModelError && bad.why.test(e.message) && /wte_lookup/.test(e.message),
          `${bad.label} ${JSON.stringify(options)}`);
      }
    }
  }
});

test('a graph-input table (training artifacts) declared with a negative dim is invalid', () => {
  const b = new ModelBuilder({ opset: 17, irVersion: 8 });
  const ids = b.input('input_ids', 'int64', ['batch', 'sequence']);
  const table = b.input('wte', 'float', [-5, 4]);
  b.output(b.op('Gather', [table, ids], { axis: 0 }, { name: 'wte_lookup' }), 'float', ['batch', 'sequence', 4]);
  const model = roundTrip(b.build());
  assert.match(findEmbeddings(model).candidates[0]!.invalidReason!, /table "wte" is declared with dims \[-5, 4\]: a dimension is negative/);
  assert.throws(() => applyNeftune(model), OnnxModelError);
  const symbolic = new ModelBuilder({ opset: 17, irVersion: 8 });
  const ids2 = symbolic.input('input_ids', 'int64', ['batch', 'sequence']);
  const table2 = symbolic.input('wte', 'float', ['vocab', 4]);
  symbolic.output(symbolic.op('Gather', [table2, ids2], { axis: 0 }), 'float', ['batch', 'sequence', 4]);
  assert.equal(findEmbeddings(roundTrip(symbolic.build())).defaultTarget.length, 1, 'a symbolic dim is fine');
});

test('an invalid token table next to a valid one: the valid one is the target, the invalid one is refused by name', () => {
  const b = new ModelBuilder({ opset: 17, irVersion: 8 });
  const ids = b.input('input_ids', 'int64', ['batch', 'sequence']);
  const good = b.initializer('good_table', Tensor.fromArray('float', [10, 4], floats(40)));
  const bad = b.initializer('bad_table', new Tensor({ dims: [1000, 4], data_type: 1, raw_data: new Uint8Array(160) }));
  b.output(b.op('Add', [b.op('Gather', [good, ids], { axis: 0 }, { name: 'good_lookup' }), b.op('Gather', [bad, ids], { axis: 0 }, { name: 'bad_lookup' })]), 'float', ['batch', 'sequence', 4]);
  const model = roundTrip(b.build());
  const report = findEmbeddings(model);
  assert.deepEqual(report.defaultTarget.map((c) => c.nodeLabel), ['good_lookup']);
  assert.match(report.targetReason, /skipped invalid token lookup: bad_lookup: table "bad_table"/);
  assert.deepEqual(applyNeftune(roundTrip(model)).record.sites.map((s) => s.table), ['good_table']);
  assert.deepEqual(applyNeftune(roundTrip(model), { allCandidates: true }).record.sites.map((s) => s.table), ['good_table']);
  assert.throws(() => applyNeftune(roundTrip(model), { tables: ['good_table', 'bad_table'] }), (e: unknown) => e instanceof OnnxModelError && /bad_table/.test(e.message));
  const file = writeModel(model);
  const explicit = cliPatch(file, ['--table', 'bad_table']);
  assert.equal(explicit.code, 4);
  assert.equal(explicit.written, false);
  assert.match(explicit.json.files[0].error.message, /bad_table.*needs 16000 bytes, but raw_data holds 160/);
  assert.equal(cliPatch(file).code, 0);
});

test('table checks use lengths only: deferred and external payloads are never read', () => {
  // Deferred: the payload stays in the file; the file is gone before the analysis runs.
  const file = writeModel(tokenModel({ table: new Tensor({ dims: [10, 4], data_type: 1, raw_data: new Uint8Array(200) }) }));
  const loaded = readModelFile(file, { deferThreshold: 64 });
  unlinkSync(file);
  assert.match(findEmbeddings(loaded.model).candidates[0]!.invalidReason!, /needs 160 bytes, but raw_data holds 200/);
  // External: the recorded length is compared; no data file exists at all.
  const external = (length: number) => tokenModel({ table: Tensor.external('float', [10, 4], { location: 'absent.bin', offset: 0, length }) });
  assert.match(findEmbeddings(external(100)).candidates[0]!.invalidReason!, /needs 160 bytes, but external data "absent.bin" \(length\) holds 100/);
  const fine = findEmbeddings(external(160));
  assert.equal(fine.candidates[0]!.invalidReason, undefined);
  assert.equal(fine.defaultTarget.length, 1);
});

test('token ids must be integers: FLOAT indices are refused, a Cast to int64 is fine', () => {
  const floatIds = roundTrip(tokenModel({ idsType: 'float' }));
  const [c] = findEmbeddings(floatIds).candidates;
  assert.match(c!.invalidReason!, /indices "input_ids" are FLOAT: a lookup takes int32 or int64 token ids/);
  assert.throws(() => applyNeftune(floatIds), (e: unknown) => e instanceof OnnxModelError && /input_ids/.test(e.message));
  assert.equal(findEmbeddings(roundTrip(tokenModel({ idsType: 'int32' }))).defaultTarget.length, 1);

  // Undeclared indices behind a Reshape of a float input are float too; behind a Cast they are what the Cast says.
  for (const [via, valid] of [['Reshape', false], ['Cast', true]] as const) {
    const b = new ModelBuilder({ opset: 17, irVersion: 8 });
    const raw = b.input('input_ids', 'float', ['batch', 'sequence']);
    const ids = via === 'Cast' ? b.op('Cast', [raw], { to: 7 }) : b.op('Reshape', [raw, b.constant('shape', 'int64', [2], [1, -1])]);
    const table = b.initializer('wte', Tensor.fromArray('float', [10, 4], floats(40)));
    b.output(b.op('Gather', [table, ids], { axis: 0 }, { name: 'wte_lookup' }), 'float', [1, 'sequence', 4]);
    const report = findEmbeddings(roundTrip(b.build()));
    assert.equal(report.candidates[0]!.invalidReason === undefined, valid, `${via}: ${report.candidates[0]!.invalidReason}`);
  }

  const file = writeModel(floatIds);
  const patched = cliPatch(file);
  assert.equal(patched.code, 4);
  assert.equal(patched.written, false);
  assert.match(patched.json.files[0].error.message, /indices "input_ids" are FLOAT/);
  const inspected = runCliJson(['inspect', file]);
  assert.equal(inspected.code, 0);
  const candidate = inspected.json.files[0].model.embeddings.candidates[0];
  assert.equal(candidate.patchable, false);
  assert.match(candidate.notPatchableReason, /indices "input_ids" are FLOAT/);
  assert.match(runCli(['inspect', file]).stdout, /not patchable: .*indices "input_ids" are FLOAT/);
});

test('CLI: a model whose only token table is malformed exits 4, writes nothing, and inspect says why', () => {
  for (const bad of badTables) {
    const file = writeModel(tokenModel({ table: bad.tensor() }));
    const patched = cliPatch(file);
    assert.equal(patched.code, 4, `${bad.label}: ${JSON.stringify(patched.json.files[0]?.error)}`);
    assert.equal(patched.written, false, bad.label);
    assert.equal(patched.json.files[0].error.code, 'ONNX_MODEL');
    assert.match(patched.json.files[0].error.message, bad.why, bad.label);
    const inspected = runCliJson(['inspect', file]);
    assert.equal(inspected.code, 0, bad.label);
    const e = inspected.json.files[0].model.embeddings;
    assert.match(e.candidates[0].notPatchableReason, bad.why, bad.label);
    assert.equal(e.candidates[0].defaultTarget, false);
    assert.match(e.targetReason, bad.why, bad.label);
  }
});

// ---------------------------------------------------------------------------------------------
// Near misses (issue 10): lookup-like nodes that are not candidates, with the reason.

test('near misses: a Gather on another axis or on a table of rank != 2 is listed with the reason', () => {
  const b = new ModelBuilder({ opset: 17, irVersion: 8 });
  const ids = b.input('input_ids', 'int64', ['batch', 'sequence']);
  const table = b.initializer('wte', Tensor.fromArray('float', [10, 4], floats(40)));
  const cube = b.initializer('cube', Tensor.fromArray('float', [10, 4, 2], floats(80)));
  const shapeConst = b.constant('shape_const', 'int64', [3], [1, 2, 3]);
  const axis1 = b.op('Gather', [table, ids], { axis: 1 }, { name: 'columns' });
  const axisMinus2 = b.op('Gather', [table, ids], { axis: -2 }, { name: 'rows_negative_axis' });
  const rank3 = b.op('Gather', [cube, ids], { axis: 0 }, { name: 'cube_lookup' });
  const shapeArith = b.op('Gather', [shapeConst, b.constant('zero', 'int64', [], [0])], { axis: 0 }, { name: 'shape_arithmetic' });
  for (const v of [axis1, axisMinus2, rank3, shapeArith]) b.output(v);
  const report = findEmbeddings(roundTrip(b.build()));
  assert.deepEqual(report.candidates.map((c) => c.nodeLabel), ['rows_negative_axis']);
  assert.deepEqual(report.nearMisses.map((m) => m.node), ['columns', 'cube_lookup']);
  assert.match(report.nearMisses[0]!.reason, /axis 1 of 2-D table "wte"/);
  assert.match(report.nearMisses[1]!.reason, /"cube" has rank 3 \(dims \[10, 4, 2\]\)/);
  assert.deepEqual(report.nearMisses[0]!.graphPath, ['main']);
  // inspect shows them, in text and JSON, so a refused model can be understood.
  const dir = tempDir('near-misses');
  const file = path.join(dir, 'near.onnx');
  writeFileSync(file, encodeModel(b.build()));
  const text = runCli(['inspect', file]);
  assert.match(text.stdout, /not taken as embedding lookups:\n.*columns: .*axis 1 of 2-D table "wte"/);
  assert.match(text.stdout, /cube_lookup: .*rank 3/);
  const json = runCliJson(['inspect', file]).json.files[0].model.embeddings;
  assert.deepEqual(json.nearMisses.map((m: { node: string }) => m.node), ['columns', 'cube_lookup']);
});
