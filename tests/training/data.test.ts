import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { OnnxNeftuneError } from '../../src/graph/errors.js';
import { IGNORE_INDEX, type TokenBatch } from '../../src/training/batch.js';
import {
  ALPACA_PROMPT_NO_INPUT, Batcher, TokenJsonlParser, TrainingDataError, alpacaPrompt, parseAlpaca, parseTokenJsonl,
  tokenizeAlpaca, type TokenRow,
} from '../../src/training/data.js';
import { loadTokenizer } from '../../src/training/tokenize.js';
import { readAlpacaFile, readTokenJsonlFile, readTokenizerFile } from '../../src/io/data-files.js';
import { DATA_FILES, TINY_TOKENS, tinyTokenRows, tinyTokenizerSpec } from '../../examples/make-data.js';
import { tempDir } from '../cli-helpers.js';
import { projectRoot } from '../helpers.js';

const dataDir = path.join(projectRoot, 'examples', 'data');
const IGNORE = Number(IGNORE_INDEX);

/** Asserts `run` throws a TrainingDataError (code BAD_OPTION) whose message matches `message`; returns it. */
function dataError(run: () => unknown, message: RegExp): TrainingDataError {
  let caught: unknown;
  try { run(); } catch (error) { caught = error; }
  assert.ok(caught instanceof TrainingDataError, `expected a TrainingDataError, got ${String(caught)}`);
  assert.ok(caught instanceof OnnxNeftuneError);
  assert.equal(caught.code, 'BAD_OPTION');
  assert.match(caught.message, message);
  return caught;
}

const row = (ids: number[], labels?: number[]): TokenRow =>
  (labels ? { inputIds: Int32Array.from(ids), labels: Int32Array.from(labels) } : { inputIds: Int32Array.from(ids) });

/** Row r of a batch as numbers: [ids, mask, labels, positions]. */
function rowOf(batch: TokenBatch, r: number) {
  const slice = (a: BigInt64Array | undefined) => (a ? Array.from(a.subarray(r * batch.length, (r + 1) * batch.length), Number) : []);
  return { ids: slice(batch.inputIds), mask: slice(batch.attentionMask), labels: slice(batch.labels), positions: slice(batch.positionIds) };
}

// ------------------------------------------------------------------ token JSONL

test('the bundled token data parses (streamed from the file) and stays inside its vocabulary', async () => {
  const data = await readTokenJsonlFile(path.join(dataDir, 'tiny-tokens.jsonl'), { vocabSize: TINY_TOKENS.vocab });
  assert.equal(data.rows.length, 320);
  assert.equal(data.skipped, 0);
  assert.deepEqual(Array.from(data.rows[0]!.inputIds), tinyTokenRows()[0]);
  assert.equal(data.tokens, tinyTokenRows().reduce((sum, r) => sum + r.length, 0));
  await assert.rejects(readTokenJsonlFile(path.join(dataDir, 'tiny-tokens.jsonl'), { vocabSize: 40 }),
    (e: Error) => e instanceof TrainingDataError && /line 1: input_ids\[\d+\] is \d+, outside the model's vocabulary of 40 tokens/.test(e.message));
  await assert.rejects(readTokenJsonlFile(path.join(dataDir, 'missing.jsonl'), { vocabSize: 64 }),
    (e: Error) => e instanceof OnnxNeftuneError && e.code === 'FILE_ACCESS' && /missing\.jsonl.*ENOENT/.test(e.message));
});

test('examples/make-data.ts reproduces the committed data files byte for byte', () => {
  for (const [name, make] of Object.entries(DATA_FILES)) {
    assert.equal(readFileSync(path.join(dataDir, name), 'utf8'), make(), `${name} differs from what make-data.ts writes; rerun it`);
  }
  assert.ok(tinyTokenRows().every((r) => r.every((id) => id < TINY_TOKENS.vocab)));
});

test('malformed token JSONL: a typed error naming the line and what is wrong', () => {
  const parse = (text: string, vocabSize = 10) => () => parseTokenJsonl(text, { vocabSize, source: 'd.jsonl' });
  const good = '{"input_ids": [1, 2, 3]}\n';
  const cases: [string, RegExp, number | undefined][] = [
    [`${good}{"input_ids": [1, 2,}\n`, /d\.jsonl line 2: not JSON/, 2],
    [`${good}\n[1, 2, 3]\n`, /line 3: expected an object like \{"input_ids"/, 3],
    [`${good}{"ids": [1, 2]}`, /line 2: no "input_ids"/, 2],
    [`{"input_ids": "1 2 3"}`, /line 1: "input_ids" is the string "1 2 3", not an array/, 1],
    [`{"input_ids": [1, 2.5]}`, /line 1: input_ids\[1\] is 2\.5, not an integer token id/, 1],
    [`{"input_ids": [1, "2"]}`, /line 1: input_ids\[1\] is the string "2", not an integer/, 1],
    [`{"input_ids": [1, -3]}`, /line 1: input_ids\[1\] is -3; token ids are 0 or more/, 1],
    [`{"input_ids": [1, -100]}`, /line 1: input_ids\[1\] is -100; token ids are 0 or more/, 1],
    [`${good}${good}{"input_ids": [1, 10]}`, /line 3: input_ids\[1\] is 10, outside the model's vocabulary of 10 tokens \(ids 0\.\.9\)/, 3],
    [`{"input_ids": []}`, /line 1: "input_ids" is empty/, 1],
    [`{"input_ids": [1, 2], "labels": [1]}`, /line 1: "labels" has 1 entries but "input_ids" has 2/, 1],
    [`{"input_ids": [1, 2], "labels": [-100, -5]}`, /line 1: labels\[1\] is -5; token ids are 0 or more \(-100 marks no loss\)/, 1],
    [`{"input_ids": [1, 2], "labels": [1, 12]}`, /line 1: labels\[1\] is 12, outside/, 1],
    ['', /d\.jsonl has no rows/, undefined],
    ['\n  \n\r\n', /d\.jsonl has no rows/, undefined],
    ['{"input_ids": [1, 2], "labels": [1, -100]}\n{"input_ids": [4]}\n', /has no usable rows \(all 2 have no position with a target\)/, undefined],
  ];
  for (const [text, message, line] of cases) assert.equal(dataError(parse(text), message).line, line, text);
  dataError(() => new TokenJsonlParser({ vocabSize: 0 }), /vocabSize must be a positive integer/);
});

test('token JSONL: blank lines and CRLF are skipped, labels kept, rows without a target dropped and counted', () => {
  const text = '\r\n{"input_ids": [1, 2, 3], "labels": [-100, 2, 3]}\r\n\n{"input_ids": [4, 5]}\n{"input_ids": [6], "labels": null}\n{"input_ids": [7, 8]}';
  const data = parseTokenJsonl(text, { vocabSize: 9 });
  assert.deepEqual(data.rows.map((r) => Array.from(r.inputIds)), [[1, 2, 3], [4, 5], [7, 8]]);
  assert.deepEqual(Array.from(data.rows[0]!.labels!), [IGNORE, 2, 3]);
  assert.equal(data.rows[1]!.labels, undefined);
  assert.equal(data.skipped, 1);
  assert.equal(data.tokens, 7);
  const bom = parseTokenJsonl(new Uint8Array([0xef, 0xbb, 0xbf, ...new TextEncoder().encode('{"input_ids": [1, 2]}')]), { vocabSize: 9 });
  assert.deepEqual(Array.from(bom.rows[0]!.inputIds), [1, 2], 'a byte-order mark is not part of line 1');
  assert.equal(parseTokenJsonl('\uFEFF{"input_ids": [1, 2]}', { vocabSize: 9 }).rows.length, 1);
  // The line count includes blank lines.
  assert.equal(dataError(() => parseTokenJsonl(`${text}\n\n{}`, { vocabSize: 9 }), /line 8: no "input_ids"/).line, 8);
});

test('token JSONL in chunks (split inside lines and inside a UTF-8 character) equals parsing it whole', () => {
  const text = tinyTokenRows(40).map((ids, i) => `${JSON.stringify({ input_ids: ids, note: i % 7 === 0 ? 'é€😀' : '' })}\n`).join('');
  const bytes = new TextEncoder().encode(text);
  const whole = parseTokenJsonl(bytes, { vocabSize: 64 });
  for (const size of [1, 3, 7, 64, 1000]) {
    const parser = new TokenJsonlParser({ vocabSize: 64 });
    for (let at = 0; at < bytes.length; at += size) parser.push(bytes.subarray(at, at + size));
    assert.deepEqual(parser.finish(), whole, `chunks of ${size}`);
  }
  // A stream that reuses one buffer for every chunk: the unfinished line must have been copied.
  const shared = new Uint8Array(13);
  const reusing = new TokenJsonlParser({ vocabSize: 64 });
  for (let at = 0; at < bytes.length; at += shared.length) {
    const piece = bytes.subarray(at, at + shared.length);
    shared.set(piece);
    reusing.push(shared.subarray(0, piece.length));
  }
  assert.deepEqual(reusing.finish(), whole, 'a reused chunk buffer');
  const invalid = new Uint8Array([...new TextEncoder().encode('{"input_ids": [1, 2]}\n'), 0xff, 0x0a]);
  dataError(() => parseTokenJsonl(invalid, { vocabSize: 64, source: 'bin' }), /bin line 2: not UTF-8 text/);
});

// ------------------------------------------------------------------ Alpaca

const tokenizer = () => loadTokenizer(tinyTokenizerSpec());
const EOS = 2;
const UNK = 1;

test('the Alpaca prompts are the reference ones (NEFTune experiment_code/dataset.py), filled in one pass', () => {
  assert.equal(alpacaPrompt({ instruction: 'Sort {input}.', input: 'b a $&', output: 'a b' }),
    'Below is an instruction that describes a task, paired with an input that provides further context. ' +
    'Write a response that appropriately completes the request.\n\n### Instruction:\nSort {input}.\n\n### Input:\nb a $&\n\n### Response:');
  assert.equal(alpacaPrompt({ instruction: 'Name a color.', input: '', output: 'red' }),
    'Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n' +
    '### Instruction:\nName a color.\n\n### Response:');
  assert.equal(ALPACA_PROMPT_NO_INPUT.endsWith('### Response:'), true);
});

test('Alpaca data: prompt tokens masked (-100), the response and EOS are the targets', () => {
  const tk = tokenizer();
  assert.equal(tk.eosId, EOS);
  const records = parseAlpaca(readFileSync(path.join(dataDir, 'tiny-alpaca.json'), 'utf8'));
  const data = tokenizeAlpaca(records, tk, { vocabSize: 64, maxLength: 128 });
  assert.equal(data.rows.length, records.length);
  records.forEach((record, i) => {
    const { inputIds, labels } = data.rows[i]!;
    const prompt = tk.encode(alpacaPrompt(record));
    const response = tk.encode(record.output);
    assert.deepEqual(Array.from(inputIds), [...prompt, ...response, EOS]);
    assert.deepEqual(Array.from(labels!), [...prompt.map(() => IGNORE), ...response, EOS]);
    assert.ok(!inputIds.includes(UNK), `record ${i}: the bundled tokenizer covers every word`);
  });
  // Read from disk, the tokenizer and data give the same rows.
  const fromFiles = readAlpacaFile(path.join(dataDir, 'tiny-alpaca.json'), readTokenizerFile(path.join(dataDir, 'tokenizer.json')), { vocabSize: 64, maxLength: 128 });
  assert.deepEqual(fromFiles.rows, data.rows);
});

test('Alpaca data: truncation keeps the first maxLength tokens; prompts that fill it are dropped; none left is an error', () => {
  const tk = tokenizer();
  const short = { instruction: 'Name a color.', input: '', output: 'red blue green' };
  const promptLength = tk.encode(alpacaPrompt(short)).length;
  const cut = tokenizeAlpaca([short], tk, { vocabSize: 64, maxLength: promptLength + 2 });
  assert.equal(cut.rows[0]!.inputIds.length, promptLength + 2);
  assert.deepEqual(Array.from(cut.rows[0]!.labels!.subarray(promptLength)), tk.encode('red blue'));
  const long = { instruction: 'Repeat the words.', input: 'red '.repeat(40), output: 'red' };
  const mixed = tokenizeAlpaca([short, long], tk, { vocabSize: 64, maxLength: promptLength + 4 });
  assert.equal(mixed.rows.length, 1);
  assert.equal(mixed.skipped, 1);
  dataError(() => tokenizeAlpaca([long], tk, { vocabSize: 64, maxLength: 16 }), /no usable rows.*raise maxLength/);
});

test('a tokenizer whose vocabulary does not fit the model is refused, naming both sizes', () => {
  const tk = tokenizer();
  const needed = tk.vocabSize;
  dataError(() => tokenizeAlpaca([{ instruction: 'x', input: '', output: 'y' }], tk, { vocabSize: needed - 1, maxLength: 64 }),
    new RegExp(`produces ids up to ${needed - 1}, but the model's embedding table has ${needed - 1} rows`));
  assert.equal(tokenizeAlpaca([{ instruction: 'Name a color.', input: '', output: 'red' }], tk, { vocabSize: needed, maxLength: 64 }).rows.length, 1);
});

test('EOS: named by tokenizer_config.json beside tokenizer.json, found by name, or absent (nothing appended)', () => {
  const spec = tinyTokenizerSpec() as { added_tokens: { content: string }[]; model: { vocab: Record<string, number> } };
  const dir = tempDir('tokenizer');
  // A config naming [PAD] as EOS wins over the </s> name.
  writeFileSync(path.join(dir, 'tokenizer.json'), JSON.stringify(spec));
  writeFileSync(path.join(dir, 'tokenizer_config.json'), JSON.stringify({ eos_token: { content: '[PAD]' } }));
  assert.equal(readTokenizerFile(path.join(dir, 'tokenizer.json')).eosId, 0);
  writeFileSync(path.join(dir, 'tokenizer_config.json'), '{ nope');
  dataError(() => readTokenizerFile(path.join(dir, 'tokenizer.json')), /tokenizer_config\.json is not JSON/);
  dataError(() => loadTokenizer(spec, { eosToken: '<eos>' }), /The EOS token "<eos>" is not in the tokenizer's vocabulary/);
  // Without </s> there is no EOS and rows end with the response.
  const renamed = JSON.parse(JSON.stringify(spec).replaceAll('</s>', '<sep>'));
  const noEos = loadTokenizer(renamed);
  assert.equal(noEos.eosId, undefined);
  const rows = tokenizeAlpaca([{ instruction: 'Name a color.', input: '', output: 'red' }], noEos, { vocabSize: 64, maxLength: 64 }).rows;
  assert.equal(rows[0]!.inputIds.at(-1), noEos.encode('red')[0]);
});

test('bad tokenizer.json and bad Alpaca records: typed errors saying where', () => {
  dataError(() => loadTokenizer('{', { source: 't.json' }), /t\.json is not JSON/);
  dataError(() => loadTokenizer('{"vocab": {}}', { source: 't.json' }), /t\.json is not a Hugging Face tokenizer\.json \(no "model" object\)/);
  dataError(() => loadTokenizer({ model: { type: 'Nope' } }), /could not be loaded as a tokenizer/);
  dataError(() => parseAlpaca('[{"instruction": "a", "output": "b"}, {"instruction": "a"}]', 'a.json'), /a\.json record 1 \(0-based\): "output" is missing/);
  dataError(() => parseAlpaca('[{"instruction": 3, "output": "b"}]'), /"instruction" is 3; it must be a string/);
  dataError(() => parseAlpaca('[1, 2', 'a.json'), /a\.json starts like a JSON array but is not valid JSON/);
  assert.equal(dataError(() => parseAlpaca('{"instruction": "a", "output": "b"}\n\n{"instruction": "a", "output": ', 'a.jsonl'), /a\.jsonl line 3: not JSON/).line, 3);
  assert.equal(dataError(() => parseAlpaca('"text"', 'a.jsonl'), /line 1: expected an object with "instruction"/).line, 1);
  dataError(() => parseAlpaca(' \n', 'a.jsonl'), /a\.jsonl has no records/);
  dataError(() => parseAlpaca('[]', 'a.json'), /a\.json has no records/);
  assert.deepEqual(parseAlpaca('{"instruction": "a", "input": null, "output": "b"}'), [{ instruction: 'a', input: '', output: 'b' }]);
});

// ------------------------------------------------------------------ batching

const rows = (count: number, seed = 3) => tinyTokenRows(count, seed).map((ids) => row(ids));

test('padding: each batch is as long as its longest row (capped), mask and labels -100 over padding, tokens counted', () => {
  const data = [row([1, 2, 3]), row([4, 5, 6, 7, 8], [IGNORE, IGNORE, 6, 7, 8]), row([9, 10]), row(Array.from({ length: 30 }, (_, i) => i))];
  const batcher = new Batcher(data, { batchSize: 2, maxLength: 16, shuffle: false, padId: 63 });
  assert.equal(batcher.batchCount(0), 2);
  const first = batcher.batch(0, 0);
  assert.equal(first.batch, 2);
  assert.equal(first.length, 5);
  assert.equal(first.positionIds, undefined);
  assert.equal(first.tokens, 8);
  assert.deepEqual(rowOf(first, 0), { ids: [1, 2, 3, 63, 63], mask: [1, 1, 1, 0, 0], labels: [1, 2, 3, IGNORE, IGNORE], positions: [] });
  assert.deepEqual(rowOf(first, 1).labels, [IGNORE, IGNORE, 6, 7, 8]);
  const second = batcher.batch(0, 1);
  assert.equal(second.length, 16, 'the 30-token row is cut at maxLength');
  assert.equal(second.tokens, 2 + 16);
  assert.deepEqual(rowOf(second, 1).ids, Array.from({ length: 16 }, (_, i) => i));
  assert.equal(second.inputIds.length, 2 * 16);
  const dropped = new Batcher(data.slice(0, 3), { batchSize: 2, maxLength: 16, dropLast: true });
  assert.equal(dropped.batchCount(0), 1);
  dataError(() => new Batcher(data.slice(0, 1), { batchSize: 2, maxLength: 16, dropLast: true }), /1 rows make no full batch of 2/);
  dataError(() => new Batcher(data, { batchSize: 0, maxLength: 16 }), /batchSize must be a positive integer/);
  dataError(() => new Batcher(data, { batchSize: 1, maxLength: 1 }), /maxLength must be an integer of at least 2/);
});

/** The first id of every row in epoch `epoch`, in batch order (ids identify the tiny rows well enough). */
const orderOf = (batcher: Batcher, epoch: number) =>
  [...batcher.batches(epoch)].flatMap((b) => Array.from({ length: b.batch }, (_, r) => rowOf(b, r).ids.slice(0, 4).join(',')));

test('shuffling is seeded per epoch: every row once per epoch, same (seed, epoch) same order, others differ', () => {
  const data = rows(50);
  const all = data.map((r) => Array.from(r.inputIds.subarray(0, 4)).join(',')).sort();
  const a = new Batcher(data, { batchSize: 4, maxLength: 32, seed: 5 });
  const b = new Batcher(data, { batchSize: 4, maxLength: 32, seed: 5 });
  const epoch0 = orderOf(a, 0);
  assert.deepEqual([...epoch0].sort(), all, 'a permutation of the rows');
  assert.deepEqual(orderOf(b, 0), epoch0);
  assert.notDeepEqual(orderOf(a, 1), epoch0);
  assert.deepEqual(orderOf(b, 1), orderOf(a, 1));
  assert.notDeepEqual(orderOf(new Batcher(data, { batchSize: 4, maxLength: 32, seed: 6 }), 0), epoch0);
  assert.notDeepEqual(orderOf(new Batcher(data, { batchSize: 4, maxLength: 32, seed: 5 + 2 ** 32 }), 0), epoch0, 'high bits of the seed count');
  assert.deepEqual(orderOf(new Batcher(data, { batchSize: 4, maxLength: 32, shuffle: false }), 3), data.map((r) => Array.from(r.inputIds.subarray(0, 4)).join(',')));
});

for (const pack of [false, true]) {
  test(`resume from state() continues exactly as an uninterrupted run (${pack ? 'packed' : 'padded'})`, () => {
    const data = rows(37);
    const options = { batchSize: 3, maxLength: 40, seed: 11, pack };
    const straight = new Batcher(data, options);
    const expected = Array.from({ length: 40 }, () => straight.next());
    const first = new Batcher(data, options);
    for (let i = 0; i < 17; i++) first.next();
    const saved = JSON.parse(JSON.stringify(first.state()));
    const resumed = new Batcher(data, options);
    resumed.resume(saved);
    const rest = Array.from({ length: 23 }, () => resumed.next());
    assert.deepEqual(rest, expected.slice(17));
    assert.ok(expected.some((b) => b.epoch > 0), 'the run crosses an epoch boundary');
    // The generator moves the cursor too.
    const viaGenerator = new Batcher(data, options);
    const gen = viaGenerator.batches(0);
    gen.next(); gen.next();
    assert.deepEqual({ epoch: viaGenerator.state().epoch, index: viaGenerator.state().index }, { epoch: 0, index: 2 });
    for (const key of ['seed', 'rows', 'batchSize', 'maxLength', 'pack'] as const) {
      const other = { ...saved, [key]: typeof saved[key] === 'boolean' ? !saved[key] : saved[key] + 1 };
      dataError(() => new Batcher(data, options).resume(other), new RegExp(`made with ${key} = `));
    }
    dataError(() => new Batcher(data, options).resume({ ...saved, index: 999 }), /data position \(epoch \d+, batch 999\) does not exist/);
  });
}

test('packing: rows of at most maxLength, position ids restart per segment, labels -100 at each segment start, every token once', () => {
  const data = rows(60).map((r, i) => (i % 5 === 0 ? row(Array.from(r.inputIds), Array.from(r.inputIds, (id, k) => (k < 3 ? IGNORE : id))) : r));
  const maxLength = 48;
  const batcher = new Batcher(data, { batchSize: 4, maxLength, seed: 2, pack: true });
  const seen: string[] = [];
  let tokens = 0;
  for (const batch of batcher.batches(0)) {
    assert.ok(batch.length <= maxLength);
    assert.ok(batch.positionIds);
    tokens += batch.tokens;
    for (let r = 0; r < batch.batch; r++) {
      const { ids, mask, labels, positions } = rowOf(batch, r);
      let start = 0;
      while (start < ids.length && mask[start] === 1) {
        let end = start + 1;
        while (end < ids.length && mask[end] === 1 && positions[end] !== 0) end++;
        assert.deepEqual(positions.slice(start, end), Array.from({ length: end - start }, (_, k) => k));
        assert.equal(labels[start], IGNORE, 'no loss across a segment boundary');
        const segment = ids.slice(start, end);
        const source = data.find((d) => Array.from(d.inputIds).join(',') === segment.join(','))!;
        assert.ok(source, 'each segment is a whole source row');
        assert.deepEqual(labels.slice(start + 1, end), Array.from((source.labels ?? source.inputIds).subarray(1)));
        seen.push(segment.join(','));
        start = end;
      }
      assert.ok(mask.slice(start).every((m) => m === 0), 'padding only at the end');
      assert.ok(labels.slice(start).every((l) => l === IGNORE));
    }
  }
  assert.deepEqual(seen.sort(), data.map((d) => Array.from(d.inputIds).join(',')).sort(), 'every row exactly once');
  assert.equal(tokens, data.reduce((sum, d) => sum + d.inputIds.length, 0));
  assert.ok(batcher.batchCount(0) < new Batcher(data, { batchSize: 4, maxLength, pack: false }).batchCount(0), 'packing uses fewer batches');
});
