/**
 * `neftune step` through the real bin: the written step graph runs on onnxruntime-node with feeds
 * wired from the record in its metadata, and its loss falls; external data, errors, exit codes.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { ModelBuilder, Tensor, decodeModel, encodeModel, type Model } from '../src/graph/index.js';
import { saveWithExternalData } from '../src/io/index.js';
import { TRAINING_STEP_METADATA_KEY, type TrainingStepRecord } from '../src/training/index.js';
import { buildTinyGpt } from '../examples/models.js';
import { runCli, runCliJson, tempDir } from './cli-helpers.js';
import { int64Tensor } from './ort-helpers.js';
import { ort, stepFeeds } from './training/helpers.js';

const VOCAB = 64;
const ids = () => int64Tensor(Array.from({ length: 16 }, (_, i) => (i * 7 + 3) % VOCAB), [2, 8]);

function writeModel(dir: string, name: string, model: Model): string {
  const file = path.join(dir, name);
  writeFileSync(file, encodeModel(model));
  return file;
}

/** The record a runner reads: the written file's metadata entry. */
function recordOf(file: string): { model: Model; record: TrainingStepRecord } {
  const model = decodeModel(new Uint8Array(readFileSync(file)));
  const text = model.metadata.get(TRAINING_STEP_METADATA_KEY);
  assert.ok(text, `${file} carries ${TRAINING_STEP_METADATA_KEY}`);
  return { model, record: JSON.parse(text) as TrainingStepRecord };
}

/** Runs `steps` steps of the step file on onnxruntime-node (from its path: external data resolves), each output fed back as the next input. */
async function lossesOf(file: string, source: Model, lr: number, steps: number): Promise<number[]> {
  const step = recordOf(file);
  const { record } = step;
  const session = await ort.InferenceSession.create(file);
  let feeds = stepFeeds(source, step, lr, { input_ids: ids() });
  const seen: number[] = [];
  try {
    for (let k = 1; k <= steps; k++) {
      const out = await session.run(feeds);
      seen.push(Number((out[record.loss]!.data as Float32Array)[0]));
      const pairs = [...record.params, ...record.state].map((p) => [p.input, out[p.output]!] as const);
      feeds = { ...feeds, ...Object.fromEntries(pairs) };
      if (record.step) feeds[record.step] = int64Tensor([k + 1], []);
    }
  } finally {
    await session.release();
  }
  return seen;
}

const falls = (seen: number[]) => seen.every(Number.isFinite) && seen.at(-1)! < seen[0]! - 0.05;

test('step (AdamW, causal-LM): the written file runs on ORT with feeds from its metadata record, and the loss falls', { timeout: 60_000 }, async () => {
  const dir = tempDir('step');
  const source = buildTinyGpt({ vocab: VOCAB });
  const input = writeModel(dir, 'gpt.onnx', source);
  const out = path.join(dir, 'gpt.step.onnx');
  const r = runCliJson(['step', input, '-o', out]);
  assert.equal(r.code, 0, r.stderr);
  const file = r.json.files[0];
  assert.equal(file.status, 'built');
  const { record } = recordOf(out);
  const s = file.step;
  assert.deepEqual(s.record, record, '--json reports the record the file carries');
  assert.equal(s.optimizer, 'adamw');
  assert.equal(s.params.count, 4);
  assert.equal(s.params.elements, VOCAB * 16 + 32 * 16 + 16 + 16);
  assert.equal(s.state.length, 8);
  assert.equal(s.runtimeShapeFallbacks, 0);
  assert.equal(s.nodes.forward, source.graph.nodeCount);
  assert.ok(s.nodes.step > s.nodes.forward);
  const roles = Object.fromEntries(s.inputs.map((i: { name: string; role: string }) => [i.name, i.role]));
  assert.deepEqual([roles['input_ids'], roles['learning_rate'], roles['step'], roles['transformer.wte.weight'], roles['transformer.wte.weight.exp_avg']], ['data', 'learning-rate', 'step', 'param', 'state']);
  assert.deepEqual(s.outputs.map((o: { name: string }) => o.name).slice(0, 2), ['loss', 'transformer.wte.weight.new']);
  const seen = await lossesOf(out, source, 0.01, 6);
  assert.ok(falls(seen), `loss went ${seen.map((x) => x.toFixed(4)).join(' -> ')}`);

  // The readable report names the same things.
  const human = runCli(['step', input, '-o', path.join(dir, 'again.onnx')]);
  assert.equal(human.code, 0, human.stderr);
  for (const text of ['loss loss', 'optimizer adamw', 'parameters: 4 (1568 elements)', 'frozen: 0', 'transformer.wte.weight.exp_avg -> transformer.wte.weight.exp_avg.new', 'run-time shape fallbacks: 0']) {
    assert.ok(human.stdout.includes(text), `human report shows "${text}":\n${human.stdout}`);
  }
});

test('step (SGD momentum, --params, --gradients): frozen weights stay initializers in the file; gradients are outputs', { timeout: 60_000 }, async () => {
  const dir = tempDir('step-sgd');
  const source = buildTinyGpt({ vocab: VOCAB });
  const input = writeModel(dir, 'gpt.onnx', source);
  const out = path.join(dir, 'step.onnx');
  const r = runCliJson(['step', input, '-o', out, '--optimizer', 'sgd', '--momentum', '0.9', '--params', 'transformer.wte.weight', '--params', 'ln_f.weight', '--gradients']);
  assert.equal(r.code, 0, r.stderr);
  const s = r.json.files[0].step;
  assert.deepEqual(s.params.list.map((p: { input: string }) => p.input), ['transformer.wte.weight', 'ln_f.weight']);
  assert.deepEqual(s.params.list.map((p: { grad: string }) => p.grad), ['transformer.wte.weight.grad', 'ln_f.weight.grad']);
  assert.deepEqual(s.frozen.names.sort(), ['ln_f.bias', 'transformer.wpe.weight']);
  assert.equal(s.hyperparameters.momentum, 0.9);
  assert.deepEqual(s.state.map((st: { kind: string }) => st.kind), ['momentum', 'momentum']);
  const { model } = recordOf(out);
  assert.ok(model.graph.initializer('transformer.wpe.weight'), 'a frozen weight is still an initializer of the step file');
  assert.ok(!model.graph.initializer('transformer.wte.weight'), 'a trained weight is an input only');
  assert.ok(model.graph.outputs.some((o) => o.name === 'ln_f.weight.grad'));
  const seen = await lossesOf(out, source, 0.5, 5);
  assert.ok(falls(seen), `loss went ${seen.map((x) => x.toFixed(4)).join(' -> ')}`);
});

test('step of an external-data model: frozen weights stay in the data file, copied beside an output elsewhere, referenced in place otherwise', { timeout: 60_000 }, async () => {
  const dir = tempDir('step-ext');
  const source = buildTinyGpt({ vocab: VOCAB });
  const input = path.join(dir, 'gpt.onnx');
  // Tables (4 kB, 2 kB) go to gpt.onnx.data; the 16-element LayerNorm weights stay inline.
  await saveWithExternalData(source.clone(), input, { threshold: 1024 });
  const flags = ['--optimizer', 'sgd', '--params', 'ln_f.weight', '--params', 'ln_f.bias'];

  const elsewhere = path.join(dir, 'out', 'step.onnx');
  mkdirSync(path.dirname(elsewhere));
  const r = runCliJson(['step', input, '-o', elsewhere, ...flags]);
  assert.equal(r.code, 0, r.stderr);
  assert.ok(existsSync(path.join(dir, 'out', 'gpt.onnx.data')), 'the data file of the frozen tables is copied beside the output');
  assert.deepEqual(readFileSync(path.join(dir, 'out', 'gpt.onnx.data')), readFileSync(`${input}.data`));
  assert.ok(falls(await lossesOf(elsewhere, source, 0.5, 5)));

  const beside = path.join(dir, 'step.onnx');
  const b = runCliJson(['step', input, '-o', beside, ...flags]);
  assert.equal(b.code, 0, b.stderr);
  assert.ok(falls(await lossesOf(beside, source, 0.5, 5)), 'the step file beside its model reads the same data file');

  // Training the external tables themselves: the step graph reads no data file, so none is copied.
  const trained = path.join(dir, 'trained', 'step.onnx');
  mkdirSync(path.dirname(trained));
  const t = runCliJson(['step', input, '-o', trained, '--optimizer', 'sgd', '--params', 'transformer.wte.weight', '--params', 'transformer.wpe.weight']);
  assert.equal(t.code, 0, t.stderr);
  assert.ok(!existsSync(path.join(dir, 'trained', 'gpt.onnx.data')), 'no data file beside a step graph that does not read it');
  assert.ok(falls(await lossesOf(trained, source, 0.5, 5)));
});

test('step to stdout (-o -): the model bytes, messages on stderr', () => {
  const dir = tempDir('step-stdout');
  const input = writeModel(dir, 'gpt.onnx', buildTinyGpt({ vocab: VOCAB }));
  const r = runCli(['step', input, '-o', '-', '--optimizer', 'sgd']);
  assert.equal(r.code, 0, r.stderr);
  assert.ok(decodeModel(new Uint8Array(r.stdoutBytes)).metadata.get(TRAINING_STEP_METADATA_KEY));
  assert.match(r.stderr, /built .* -> stdout: training step \(sgd/);
});

/** x (initializer) -> Sin -> Cos -> ReduceSum -> loss: two nodes without a gradient rule. */
function unsupportedModel(): Model {
  const b = new ModelBuilder({ opset: 17, irVersion: 8 });
  const x = b.initializer('x', Tensor.fromArray('float', [4], Float32Array.from([0.1, 0.2, 0.3, 0.4])));
  const c = b.op('Cos', [b.op('Sin', [x], {}, { name: 'sine' })], {}, { name: 'cosine' });
  b.output(b.op('ReduceSum', [c], { keepdims: 0 }, { outputs: ['loss'] }), 'float', []);
  return b.build();
}

/** A scalar loss computed from a graph input only: nothing to train. */
function untrainableModel(): Model {
  const b = new ModelBuilder({ opset: 17, irVersion: 8 });
  const x = b.input('x', 'float', [4]);
  b.output(b.op('ReduceSum', [x], { keepdims: 0 }, { outputs: ['loss'] }), 'float', []);
  return b.build();
}

test('step errors: each a typed error with its exit code, nothing written', () => {
  const dir = tempDir('step-errors');
  const gpt = writeModel(dir, 'gpt.onnx', buildTinyGpt({ vocab: VOCAB }));
  const out = path.join(dir, 'out.onnx');
  const cases: Array<{ args: string[]; code: number; error: string; message: RegExp }> = [
    { args: [gpt, '--loss', 'hinge'], code: 2, error: 'BAD_OPTION', message: /Unknown loss "hinge"/ },
    { args: [gpt, '--loss', 'output:nope'], code: 2, error: 'BAD_OPTION', message: /no value named "nope"/ },
    { args: [gpt, '--params', 'nope'], code: 2, error: 'BAD_OPTION', message: /Parameter "nope"/ },
    { args: [gpt, '--momentum', '-1', '--optimizer', 'sgd'], code: 2, error: 'BAD_OPTION', message: /momentum must be a finite non-negative number/ },
    { args: [writeModel(dir, 'input-only.onnx', untrainableModel())], code: 2, error: 'BAD_OPTION', message: /nothing to train/ },
    { args: [writeModel(dir, 'sin.onnx', unsupportedModel())], code: 2, error: 'BAD_OPTION', message: /Sin "sine" \(no gradient rule\); Cos "cosine" \(no gradient rule\)/ },
  ];
  for (const c of cases) {
    const r = runCliJson(['step', ...c.args, '-o', out]);
    assert.equal(r.code, c.code, `${c.args.join(' ')}: ${r.stdout}`);
    const f = r.json.files[0];
    assert.equal(f.error.code, c.error);
    assert.match(f.error.message, c.message);
    assert.ok(!existsSync(out), 'nothing written');
  }
  const sin = runCliJson(['step', path.join(dir, 'sin.onnx'), '-o', out]);
  assert.deepEqual(sin.json.files[0].unsupportedOps.map((o: { op: string; node: string }) => `${o.op} ${o.node}`), ['Sin sine', 'Cos cosine'], 'every op without a rule is listed');
  const human = runCli(['step', path.join(dir, 'sin.onnx'), '-o', out]);
  assert.match(human.stderr, /\n {2}Sin "sine": no gradient rule\n {2}Cos "cosine": no gradient rule/);

  // Over its own forward model: refused (exit 5), the model unchanged.
  const before = readFileSync(gpt);
  const over = runCliJson(['step', gpt, '-o', gpt]);
  assert.equal(over.code, 5);
  assert.match(over.json.files[0].error.message, /trainable weights as inputs, so they would be lost/);
  assert.deepEqual(readFileSync(gpt), before);
  // Usage: no -o, a folder.
  assert.equal(runCli(['step', gpt]).code, 2);
  const folder = runCliJson(['step', dir, '-o', out]);
  assert.equal(folder.code, 2);
  assert.match(folder.json.error.message, /is a folder/);
});

test('step --padding-idx and --loss causal-lm:labels: the padding row gets no gradient; the record and report say so', { timeout: 60_000 }, async () => {
  const dir = tempDir('step-padding');
  const source = buildTinyGpt({ vocab: VOCAB });
  const input = writeModel(dir, 'gpt.onnx', source);
  const out = path.join(dir, 'step.onnx');
  const r = runCliJson(['step', input, '-o', out, '--optimizer', 'sgd', '--loss', 'causal-lm:labels', '--padding-idx', '3', '--gradients']);
  assert.equal(r.code, 0, r.stderr);
  const s = r.json.files[0].step;
  assert.deepEqual(s.record.paddingRows, { 'transformer.wte.weight': 3 });
  assert.equal(s.record.gatherGradient, 'scatternd-add');
  assert.ok(s.inputs.some((i: { name: string }) => i.name === 'labels'), 'the labels input is added');
  const human = runCli(['step', input, '-o', path.join(dir, 'step2.onnx'), '--padding-idx', 'transformer.wte.weight=3']);
  assert.equal(human.code, 0, human.stderr);
  assert.match(human.stdout, /padding rows \(no gradient from their lookups\): transformer\.wte\.weight\[3\]/);
  assert.match(human.stdout, /embedding gradients: ScatterND/);

  // The table is tied to the output projection, which still trains row 3: against the same step
  // without --padding-idx, row 3's gradient changes (its lookups' share is gone) and no other row does.
  const plain = path.join(dir, 'plain.onnx');
  assert.equal(runCli(['step', input, '-o', plain, '--optimizer', 'sgd', '--loss', 'causal-lm:labels', '--gradients']).code, 0);
  const idList = Array.from({ length: 16 }, (_, i) => (i * 7 + 3) % VOCAB);
  assert.ok(idList.includes(3));
  const gradOf = async (file: string) => {
    const session = await ort.InferenceSession.create(file);
    try {
      const feeds = stepFeeds(source, recordOf(file), 0.1, { input_ids: int64Tensor(idList, [2, 8]), labels: int64Tensor(idList, [2, 8]) });
      return (await session.run(feeds))['transformer.wte.weight.grad']!;
    } finally {
      await session.release();
    }
  };
  const [padded, unpadded] = [await gradOf(out), await gradOf(plain)];
  const d = padded.dims[1]!;
  const row = (t: typeof padded, k: number) => Array.from((t.data as Float32Array).subarray(k * d, (k + 1) * d));
  for (let k = 0; k < VOCAB; k++) {
    if (k === 3) assert.notDeepEqual(row(padded, k), row(unpadded, k), 'row 3 loses its lookups\' gradient');
    else assert.deepEqual(row(padded, k), row(unpadded, k), `row ${k} is unchanged`);
  }

  for (const bad of [['--padding-idx', 'x'], ['--padding-idx', '1', '--padding-idx', '2'], ['--ignore-index', '0.5']]) {
    const e = runCli(['step', input, '-o', path.join(dir, 'bad.onnx'), ...bad]);
    assert.equal(e.code, 2, `${bad.join(' ')}: ${e.stderr}`);
    assert.ok(!existsSync(path.join(dir, 'bad.onnx')));
  }
});

test('step --momentum with adamw (the default) is refused (exit 2): the option would do nothing', () => {
  const model = path.join(tempDir('step-momentum'), 'm.onnx');
  writeFileSync(model, encodeModel(buildTinyGpt()));
  const r = runCli(['step', model, '-o', `${model}.step.onnx`, '--momentum', '0.9']);
  assert.equal(r.code, 2, r.stderr);
  assert.match(r.stderr, /--momentum is an SGD option/);
  assert.ok(!existsSync(`${model}.step.onnx`));
  assert.equal(runCli(['step', model, '-o', `${model}.sgd.onnx`, '--momentum', '0.9', '--optimizer', 'sgd']).code, 0);
});
