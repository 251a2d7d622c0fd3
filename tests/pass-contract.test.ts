/**
 * The pass contract (GraphPass, runPass), the option schema that drives library, CLI and README,
 * and the error messages that name options (the CLI spells them as flags).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, readdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import {
  Model, Node, OnnxModelError, OnnxNeftuneError, Value, decodeModel, encodeModel, errorMessage, optionName,
} from '../src/graph/index.js';
import {
  NEFTUNE_OPTIONS, PatchOptionError, applyNeftune, neftunePass, normalizeOptions, optionsTable, readPatchRecord, runPass, schemaNormalizer,
  type GraphPass, type NeftuneOptions, type OptionSchema, type OptionSpec, type PassResult,
} from '../src/passes/index.js';
import { inverseCommand, passCommand } from '../cli/commands.js';
import { FLAG_OF, cliMessage } from '../cli/flags.js';
import { buildTinyBert, buildTinyGemma, buildTinyGpt, buildTinyT5 } from '../examples/models.js';
import { runCli, runCliJson, tempDir } from './cli-helpers.js';
import { projectRoot, sameBytes } from './helpers.js';

const dir = tempDir('pass-contract');
const put = (name: string, bytes: Uint8Array) => { const file = path.join(dir, name); writeFileSync(file, bytes); return file; };
const read = (file: string) => new Uint8Array(readFileSync(file));
const noStdout = async () => { throw new Error('no stdout in this test'); };

// ---- A second pass, written against the contract: an Identity after a named value.

interface IdentityOptions { value?: string; suffix?: string }

const IDENTITY_OPTIONS: OptionSchema<IdentityOptions> = {
  value: { type: 'string', flag: 'value', placeholder: 'NAME', description: 'The value to pass through an Identity' },
  suffix: { type: 'string', flag: 'suffix', default: 'before_identity', description: 'Suffix of the fresh name the producer writes' },
};

const MARK = 'identity_pass__';

interface IdentityResult extends PassResult { inserted: string }

const identityPass: GraphPass<IdentityOptions, Partial<IdentityOptions>, IdentityResult> = {
  name: 'insert-identity',
  description: 'Insert an Identity after the producer of a value (the producer writes a fresh name, the Identity the old one)',
  options: IDENTITY_OPTIONS,
  normalize: schemaNormalizer(IDENTITY_OPTIONS),
  check(model, options) {
    if (!options.value) return [new PatchOptionError(errorMessage`Name the value with ${optionName('value')}`)];
    const value = model.graph.lookup(options.value);
    if (!value?.producer) return [new OnnxModelError(`No node of the main graph writes "${options.value}"`)];
    return [];
  },
  apply(model, options) {
    const value = model.graph.lookup(options.value!)!;
    const producer = value.producer!;
    const fresh = new Value(`${MARK}${value.name}__${options.suffix}`);
    producer.replaceOutput(producer.outputs.indexOf(value), fresh);
    const identity = new Node('Identity', [fresh], [value], { name: `${MARK}${value.name}` });
    model.graph.insertAfter(producer, identity);
    return { model, modified: true, inserted: identity.name! };
  },
  inverse(model) {
    let removed = 0;
    for (const node of [...model.graph]) {
      if (node.opType !== 'Identity' || !node.name?.startsWith(MARK)) continue;
      const [fresh, value] = [node.input(0)!, node.outputs[0]!];
      const producer = fresh.producer!;
      model.graph.remove(node, { force: true });
      producer.replaceOutput(producer.outputs.indexOf(fresh), value);
      removed++;
    }
    return { model, modified: removed > 0 };
  },
};

test('a second pass on the contract: runPass checks, applies, and its inverse restores the bytes', () => {
  const bytes = encodeModel(buildTinyGpt());
  const model = decodeModel(bytes);
  const result = runPass(identityPass, model, { value: 'inputs_embeds' });
  assert.equal(result.modified, true);
  assert.equal(result.inserted, `${MARK}inputs_embeds`);
  assert.equal(model.graph.lookup('inputs_embeds')!.producer!.opType, 'Identity');
  assert.ok(!sameBytes(encodeModel(model), bytes));
  assert.equal(identityPass.inverse!(model).modified, true);
  assert.ok(sameBytes(encodeModel(model), bytes), 'the inverse restores the original bytes');
  assert.equal(identityPass.inverse!(model).modified, false, 'nothing left to undo');

  // Preconditions refuse before anything changes; options are checked against the schema.
  const untouched = decodeModel(bytes);
  assert.throws(() => runPass(identityPass, untouched, { value: 'nope' }), OnnxModelError);
  assert.throws(() => runPass(identityPass, untouched, {}), (e: unknown) => e instanceof PatchOptionError && /with value$/.test(e.message));
  assert.throws(() => runPass(identityPass, untouched, { value: 3 as unknown as string }), (e: unknown) => e instanceof PatchOptionError && /value must be a string, got 3/.test(e.message));
  assert.throws(() => runPass(identityPass, untouched, { valeu: 'inputs_embeds' } as IdentityOptions), (e: unknown) => e instanceof PatchOptionError && /Unknown option "valeu"/.test(e.message));
  assert.ok(sameBytes(encodeModel(untouched), bytes));
});

test('a second pass runs through the CLI\'s own helpers on real files (passCommand, inverseCommand)', async () => {
  const bytes = encodeModel(buildTinyGpt());
  const input = put('identity-in.onnx', bytes);
  const out = path.join(dir, 'identity-out.onnx');
  const applied = await passCommand('identity', identityPass, [input], { value: 'inputs_embeds' }, { output: out, writeStdout: noStdout },
    (r) => ({ message: `inserted ${r.inserted}` }));
  assert.equal(applied.exitCode, 0, JSON.stringify(applied.files[0]?.error));
  assert.equal(applied.files[0]!.message, `inserted ${MARK}inputs_embeds`);
  assert.equal(decodeModel(read(out)).graph.lookup('inputs_embeds')!.producer!.name, `${MARK}inputs_embeds`);
  const back = path.join(dir, 'identity-back.onnx');
  const undone = await inverseCommand('unidentity', identityPass, [out], { output: back, writeStdout: noStdout }, () => ({ message: 'removed' }));
  assert.equal(undone.exitCode, 0);
  assert.equal(undone.files[0]!.status, 'stripped');
  assert.ok(sameBytes(read(back), bytes), 'the file comes back byte for byte');
  // A refusal is a typed failure with its exit code, not a crash.
  const refused = await passCommand('identity', identityPass, [input], { value: 'nope' }, { output: path.join(dir, 'x.onnx'), writeStdout: noStdout }, () => ({ message: '' }));
  assert.equal(refused.exitCode, 4);
  assert.equal(refused.files[0]!.error!.code, 'ONNX_MODEL');
});

test('applyNeftune is the NEFTune pass run by runPass', () => {
  const bytes = encodeModel(buildTinyBert());
  const viaPass = decodeModel(bytes);
  runPass(neftunePass, viaPass, { seed: 3, mode: 'mask' });
  const viaApply = decodeModel(bytes);
  applyNeftune(viaApply, { seed: 3, mode: 'mask' });
  assert.ok(sameBytes(encodeModel(viaPass), encodeModel(viaApply)));
  const back = decodeModel(encodeModel(viaPass));
  assert.equal(neftunePass.inverse!(back).modified, true);
  assert.ok(sameBytes(encodeModel(back), bytes));
  // check() states the preconditions without changing anything.
  assert.deepEqual(neftunePass.check(decodeModel(bytes), neftunePass.normalize({})), []);
  const [problem] = neftunePass.check(viaApply, neftunePass.normalize({}));
  assert.equal(problem?.code, 'ALREADY_PATCHED');
  assert.deepEqual(neftunePass.check(viaApply, neftunePass.normalize({ repatch: true })), []);
});

// ---- One schema: library normalisation, CLI flags, --help, README.

test('equivalent options normalise to one record: switches that are off and empty lists are not recorded', () => {
  const expected = { alpha: 5, mode: 'hf', seed: 1 };
  for (const options of [{ seed: 1 }, { seed: 1, afterScale: false, allCandidates: false, tables: [], nodes: [], alphaInput: false, repatch: false }] as NeftuneOptions[]) {
    assert.deepEqual(normalizeOptions(options), expected, JSON.stringify(options));
  }
  assert.deepEqual(Object.keys(normalizeOptions({ afterScale: true, seed: 2, alpha: 3, maskInput: 'm', mode: 'mask' })), ['alpha', 'mode', 'maskInput', 'seed', 'afterScale'], 'recorded in schema order');
});

/** The flags that ask for `options`, made from the schema (alphaInput: true last: it takes an optional value). */
function flagsFor(options: NeftuneOptions): string[] {
  const args: string[] = [];
  let bareAlphaInput = false;
  for (const [key, value] of Object.entries(options)) {
    const spec = (NEFTUNE_OPTIONS as Record<string, OptionSpec>)[key]!;
    const flag = `--${spec.flag}`;
    if (value === true && spec.type === 'boolean-or-string') bareAlphaInput = true;
    else if (value === true) args.push(flag);
    else if (value === false) continue;
    else if (Array.isArray(value)) for (const v of value) args.push(flag, v);
    else args.push(flag, String(value));
  }
  return bareAlphaInput ? [...args, '--alpha-input'] : args;
}

test('the CLI and the library write identical bytes for the same options', () => {
  const models: Record<string, () => Model> = { bert: () => buildTinyBert(), gemma: () => buildTinyGemma(), t5: () => buildTinyT5(), gpt: () => buildTinyGpt({ positionIdsInput: true }) };
  const sets: Array<[string, NeftuneOptions]> = [
    ['bert', {}], ['bert', { seed: 1 }], ['bert', { alpha: 10, mode: 'mask', seed: 7 }], ['bert', { alphaInput: true }],
    ['bert', { alphaInput: 'anneal', seed: -3 }], ['bert', { tables: ['embeddings.word_embeddings.weight', 'embeddings.position_embeddings.weight'] }],
    ['bert', { nodes: ['token_type_lookup'], maskInput: 'attention_mask', mode: 'mask' }], ['bert', { allCandidates: true, afterScale: false }],
    ['gemma', { afterScale: true, seed: 5 }], ['t5', { alpha: 15 }], ['gpt', { mode: 'packed', positionIdsInput: 'position_ids', alphaInput: true }],
  ];
  for (const [kind, options] of sets) {
    const bytes = encodeModel(models[kind]!());
    const library = decodeModel(bytes);
    applyNeftune(library, options);
    const input = put(`same-${kind}.onnx`, bytes);
    const out = path.join(dir, `same-${kind}.out.onnx`);
    const args = ['patch', input, '-o', out, ...flagsFor(options)];
    const r = runCli(args);
    assert.equal(r.code, 0, `${args.join(' ')}\n${r.stdout}${r.stderr}`);
    const cli = read(out);
    assert.ok(sameBytes(cli, encodeModel(library)), `${kind} ${JSON.stringify(options)}: CLI ${JSON.stringify(readPatchRecord(decodeModel(cli))?.options)} vs library ${JSON.stringify(readPatchRecord(library)?.options)}`);
  }
});

test('patch --help documents every option of the schema with its description and default', () => {
  const help = runCli(['patch', '--help']).stdout.replace(/\s+/g, ' ');
  for (const spec of Object.values(NEFTUNE_OPTIONS) as OptionSpec[]) {
    assert.ok(help.includes(`--${spec.flag}`), `--${spec.flag} in --help`);
    // yargs wraps long lines: compare the first words of the description.
    assert.ok(help.includes(spec.description.split(' ').slice(0, 4).join(' ')), `description of --${spec.flag}`);
  }
  assert.match(help, /--alpha .*\[default: 5\]/);
});

test('the README options table is the one the schema makes, and the synopsis lists every flag', () => {
  const readme = readFileSync(path.join(projectRoot, 'README.md'), 'utf8');
  const table = /<!-- patch-options:begin -->\n([\s\S]*?)\n<!-- patch-options:end -->/.exec(readme)?.[1];
  const expected = optionsTable(NEFTUNE_OPTIONS);
  assert.equal(table, expected, `README table out of date; replace it with:\n${expected}`);
  const synopsis = /```\n(neftune inspect[\s\S]*?)```/.exec(readme)![1]!;
  for (const spec of Object.values(NEFTUNE_OPTIONS) as OptionSpec[]) assert.ok(synopsis.includes(`--${spec.flag}`), `--${spec.flag} in the README synopsis`);
});

// ---- Errors: the library names options, the CLI names flags.

/** `--flag` texts allowed in src/ string literals: flags of other programs (npm, ORT's tools, GNU cp), not ours. */
const FOREIGN_FLAGS = new Set(['--onnxruntime-node-install', '--disable_embed_layer_norm', '--sparse', '--reflink', '--remove-destination']);

test('no library message mentions a command-line flag (src/ string literals), except other programs\' flags', () => {
  const found: string[] = [];
  let literals = 0;
  const walk = (d: string) => {
    for (const entry of readdirSync(d, { withFileTypes: true })) {
      const full = path.join(d, entry.name);
      if (entry.isDirectory()) { walk(full); continue; }
      if (!entry.name.endsWith('.ts') || entry.name.endsWith('.generated.ts')) continue;
      readFileSync(full, 'utf8').split('\n').forEach((line, i) => {
        if (/^\s*(\/\/|\*|\/\*)/.test(line)) return;
        for (const [literal] of line.matchAll(/'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*"|`(?:[^`\\]|\\.)*`/g)) {
          literals++;
          for (const [flag] of literal.matchAll(/--[a-z][a-z0-9_-]*/g)) {
            if (!FOREIGN_FLAGS.has(flag)) found.push(`${path.relative(projectRoot, full)}:${i + 1}: ${flag}`);
          }
        }
      });
    }
  };
  walk(path.join(projectRoot, 'src'));
  assert.ok(literals > 1000, `scanned ${literals} string literals`);
  assert.deepEqual(found, [], 'library messages name options (tables, repatch), not flags');
});

test('one translation table: every option and file option has its flag; the CLI prints flags, the library names', () => {
  for (const [key, spec] of Object.entries(NEFTUNE_OPTIONS) as Array<[string, OptionSpec]>) assert.equal(FLAG_OF.get(key), `--${spec.flag}`);
  assert.equal(FLAG_OF.get('inPlace'), '--in-place');
  const model = decodeModel(encodeModel(buildTinyBert()));
  applyNeftune(model);
  let error: OnnxNeftuneError | undefined;
  try { applyNeftune(model); } catch (e) { error = e as OnnxNeftuneError; }
  assert.ok(error instanceof OnnxNeftuneError, 'patching twice is refused');
  assert.match(error.message, /a re-patch \(repatch\)/);
  assert.match(cliMessage(error), /a re-patch \(--repatch\)/);
  const patched = put('twice.onnx', encodeModel(model));
  const r = runCliJson(['patch', patched, '-o', path.join(dir, 'twice-out.onnx')]);
  assert.equal(r.code, 5);
  assert.match(r.json.files[0].error.message, /a re-patch \(--repatch\)/);
  const text = runCli(['patch', patched, '-o', path.join(dir, 'twice-out.onnx')]);
  assert.match(text.stdout + text.stderr, /a re-patch \(--repatch\)/);
});
