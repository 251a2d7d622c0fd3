/**
 * Training data for `neftune train`: token-id JSONL and Alpaca instruction data parsed into token
 * rows, and the batcher that shuffles (seeded), pads or packs them into TokenBatch. Browser-safe:
 * everything parses from strings or bytes; reading files is the caller's (src/io/data-files.ts).
 */
import { OnnxNeftuneError } from '../graph/errors.js';
import { IGNORE_INDEX, type TokenBatch } from './batch.js';
import type { TextTokenizer } from './tokenize.js';

const IGNORE = Number(IGNORE_INDEX);

/** Data that cannot be trained on as it is: malformed lines, ids outside the model's vocabulary, no rows. */
export class TrainingDataError extends OnnxNeftuneError {
  constructor(message: string, readonly source: string, readonly line?: number) {
    super('BAD_OPTION', message);
  }
}

/** One training example. `labels` absent: every token is a target (labels = input ids). */
export interface TokenRow {
  inputIds: Int32Array;
  labels?: Int32Array;
}

export interface TokenDataset {
  rows: TokenRow[];
  /** Rows dropped because no position had a target (all labels -100, or one token only). */
  skipped: number;
  /** Tokens in the kept rows. */
  tokens: number;
}

/** True when some position after the first has a target (the causal loss never uses labels[0]). */
const hasTarget = (row: TokenRow): boolean => {
  if (row.inputIds.length < 2) return false;
  if (!row.labels) return true;
  for (let i = 1; i < row.labels.length; i++) if (row.labels[i] !== IGNORE) return true;
  return false;
};

/** Collects rows, dropping those without a target, and refuses a dataset with none left. */
class DatasetBuilder {
  private readonly rows: TokenRow[] = [];
  private skipped = 0;
  private tokens = 0;
  constructor(private readonly source: string) {}
  add(row: TokenRow): void {
    if (!hasTarget(row)) { this.skipped++; return; }
    this.rows.push(row);
    this.tokens += row.inputIds.length;
  }
  finish(hint: string): TokenDataset {
    if (this.rows.length === 0) {
      const why = this.skipped === 0 ? 'has no rows' : `has no usable rows (all ${this.skipped} have no position with a target)`;
      throw new TrainingDataError(`${this.source} ${why}; ${hint}`, this.source);
    }
    return { rows: this.rows, skipped: this.skipped, tokens: this.tokens };
  }
}

export interface TokenJsonlOptions {
  /** Rows of the model's token-embedding table: every id must be below it. */
  vocabSize: number;
  /** The file name, for messages. */
  source?: string;
}

/**
 * Token-id JSONL, one `{"input_ids": [...], "labels"?: [...]}` per line, fed in chunks so a large
 * file is never held as text: only the current line is, and ids are kept as Int32Array.
 * Blank lines are skipped; every problem names its line.
 */
export class TokenJsonlParser {
  private readonly decoder = new TextDecoder('utf-8', { fatal: true });
  private readonly builder: DatasetBuilder;
  private readonly source: string;
  /** The unfinished last line: bytes (split at 0x0A, which never occurs inside a UTF-8 character) or text. */
  private pendingBytes: Uint8Array[] = [];
  private pendingText = '';
  private line = 0;

  constructor(private readonly options: TokenJsonlOptions) {
    checkVocabSize(options.vocabSize);
    this.source = options.source ?? 'token data';
    this.builder = new DatasetBuilder(this.source);
  }

  push(chunk: Uint8Array | string): void {
    if (typeof chunk === 'string') {
      if (this.pendingBytes.length > 0) this.pendingText = this.decodeLine(new Uint8Array(0));
      let start = 0;
      for (let end = chunk.indexOf('\n'); end >= 0; start = end + 1, end = chunk.indexOf('\n', start)) {
        this.parseLine(this.pendingText + chunk.slice(start, end));
        this.pendingText = '';
      }
      this.pendingText += chunk.slice(start);
      return;
    }
    let start = 0;
    for (let end = chunk.indexOf(0x0a); end >= 0; start = end + 1, end = chunk.indexOf(0x0a, start)) {
      this.parseLine(this.decodeLine(chunk.subarray(start, end)));
    }
    // Copied: a stream may reuse its buffer.
    if (start < chunk.length) this.pendingBytes.push(chunk.slice(start));
  }

  finish(): TokenDataset {
    if (this.pendingBytes.length > 0) this.parseLine(this.decodeLine(new Uint8Array(0)));
    else if (this.pendingText.length > 0) this.parseLine(this.pendingText);
    this.pendingText = '';
    return this.builder.finish('each line needs {"input_ids": [...]} with at least two tokens and a label that is not -100.');
  }

  /** The pending bytes and `tail` as one line of text (the pending text first, when strings were pushed too). */
  private decodeLine(tail: Uint8Array): string {
    const parts = [...this.pendingBytes, tail];
    this.pendingBytes = [];
    const bytes = parts.length === 1 ? tail : new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
    if (parts.length > 1) parts.reduce((at, p) => { bytes.set(p, at); return at + p.length; }, 0);
    let text: string;
    try { text = this.decoder.decode(bytes); } catch {
      throw new TrainingDataError(`${this.source} line ${this.line + 1}: not UTF-8 text; token data is JSON lines.`, this.source, this.line + 1);
    }
    const line = this.pendingText + text;
    this.pendingText = '';
    return line;
  }

  private parseLine(raw: string): void {
    this.line++;
    const unmarked = this.line === 1 && raw.startsWith('\uFEFF') ? raw.slice(1) : raw;
    const text = unmarked.endsWith('\r') ? unmarked.slice(0, -1) : unmarked;
    if (text.trim() === '') return;
    const fail = (what: string): never => {
      throw new TrainingDataError(`${this.source} line ${this.line}: ${what}`, this.source, this.line);
    };
    let value: unknown;
    try { value = JSON.parse(text); } catch (error) {
      fail(`not JSON (${(error as Error).message}); each line must be one object like {"input_ids": [1, 2, 3]}.`);
    }
    if (typeof value !== 'object' || value === null || Array.isArray(value)) {
      fail(`expected an object like {"input_ids": [1, 2, 3]}, found ${describe(value)}.`);
    }
    const record = value as Record<string, unknown>;
    if (!('input_ids' in record)) fail('no "input_ids"; each line needs {"input_ids": [...]}.');
    const inputIds = this.ids(record['input_ids'], 'input_ids', false, fail);
    if (inputIds.length === 0) fail('"input_ids" is empty.');
    const rawLabels = record['labels'];
    let labels: Int32Array | undefined;
    if (rawLabels !== undefined && rawLabels !== null) {
      labels = this.ids(rawLabels, 'labels', true, fail);
      if (labels.length !== inputIds.length) {
        fail(`"labels" has ${labels.length} entries but "input_ids" has ${inputIds.length}; give one label per token (-100 for no loss).`);
      }
    }
    this.builder.add(labels ? { inputIds, labels } : { inputIds });
  }

  private ids(value: unknown, key: string, allowIgnore: boolean, fail: (what: string) => never): Int32Array {
    if (!Array.isArray(value)) fail(`"${key}" is ${describe(value)}, not an array of token ids.`);
    const list = value as unknown[];
    const out = new Int32Array(list.length);
    const vocab = this.options.vocabSize;
    for (let i = 0; i < list.length; i++) {
      const id = list[i];
      if (typeof id !== 'number' || !Number.isInteger(id)) fail(`${key}[${i}] is ${describe(id)}, not an integer token id.`);
      const n = id as number;
      if (allowIgnore && n === IGNORE) { out[i] = n; continue; }
      if (n < 0) fail(`${key}[${i}] is ${n}; token ids are 0 or more${allowIgnore ? ' (-100 marks no loss)' : ''}.`);
      if (n >= vocab) fail(`${key}[${i}] is ${n}, outside the model's vocabulary of ${vocab} tokens (ids 0..${vocab - 1}); the data was made for another model.`);
      out[i] = n;
    }
    return out;
  }
}

/** Parses a whole token-id JSONL text or byte array (see TokenJsonlParser). */
export function parseTokenJsonl(data: string | Uint8Array, options: TokenJsonlOptions): TokenDataset {
  const parser = new TokenJsonlParser(options);
  parser.push(data);
  return parser.finish();
}

/** Parses token-id JSONL arriving in chunks (a file or fetch stream). */
export async function readTokenJsonl(chunks: AsyncIterable<Uint8Array | string>, options: TokenJsonlOptions): Promise<TokenDataset> {
  const parser = new TokenJsonlParser(options);
  for await (const chunk of chunks) parser.push(chunk);
  return parser.finish();
}

function describe(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'an array';
  if (typeof value === 'string') return `the string ${JSON.stringify(value.length > 20 ? `${value.slice(0, 20)}...` : value)}`;
  if (typeof value === 'number') return String(value);
  return `a ${typeof value}`;
}

function checkVocabSize(vocabSize: number): void {
  if (!Number.isSafeInteger(vocabSize) || vocabSize < 1 || vocabSize > 2 ** 31) {
    throw new TrainingDataError(`vocabSize must be a positive integer (the rows of the model's embedding table), not ${vocabSize}.`, 'options');
  }
}

// ---------------------------------------------------------------------------------------------
// Alpaca instruction data

export interface AlpacaRecord {
  instruction: string;
  /** Empty when the task has no input (the no-input template is used). */
  input: string;
  output: string;
}

/**
 * The Stanford Alpaca prompts, as NEFTune's training code (experiment_code/dataset.py) uses them:
 * the response follows "### Response:" directly, then EOS; the prompt is masked out of the loss.
 */
export const ALPACA_PROMPT_INPUT =
  'Below is an instruction that describes a task, paired with an input that provides further context. ' +
  'Write a response that appropriately completes the request.\n\n' +
  '### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:';
export const ALPACA_PROMPT_NO_INPUT =
  'Below is an instruction that describes a task. ' +
  'Write a response that appropriately completes the request.\n\n' +
  '### Instruction:\n{instruction}\n\n### Response:';

/** The prompt of `record`; one pass over the template, so braces inside the fields stay as written. */
export function alpacaPrompt(record: AlpacaRecord): string {
  const template = record.input !== '' ? ALPACA_PROMPT_INPUT : ALPACA_PROMPT_NO_INPUT;
  return template.replace(/\{(instruction|input)\}/g, (_, key: 'instruction' | 'input') => record[key]);
}

/** Alpaca records from a JSON array (the original alpaca_data.json) or JSON lines. */
export function parseAlpaca(text: string, source = 'instruction data'): AlpacaRecord[] {
  const body = text.replace(/^\uFEFF/, '');
  const records: AlpacaRecord[] = [];
  if (body.trimStart().startsWith('[')) {
    let list: unknown;
    try { list = JSON.parse(body); } catch (error) {
      throw new TrainingDataError(`${source} starts like a JSON array but is not valid JSON (${(error as Error).message}).`, source);
    }
    (list as unknown[]).forEach((item, i) => records.push(alpacaRecord(item, `${source} record ${i} (0-based)`, source)));
  } else {
    body.split('\n').forEach((raw, i) => {
      const line = raw.endsWith('\r') ? raw.slice(0, -1) : raw;
      if (line.trim() === '') return;
      const where = `${source} line ${i + 1}`;
      let item: unknown;
      try { item = JSON.parse(line); } catch (error) {
        throw new TrainingDataError(`${where}: not JSON (${(error as Error).message}); give a JSON array of records or one record per line.`, source, i + 1);
      }
      records.push(alpacaRecord(item, where, source, i + 1));
    });
  }
  if (records.length === 0) throw new TrainingDataError(`${source} has no records; give {"instruction", "input", "output"} records.`, source);
  return records;
}

function alpacaRecord(item: unknown, where: string, source: string, line?: number): AlpacaRecord {
  const fail = (what: string): never => { throw new TrainingDataError(`${where}: ${what}`, source, line); };
  if (typeof item !== 'object' || item === null || Array.isArray(item)) {
    fail(`expected an object with "instruction", "input" and "output", found ${describe(item)}.`);
  }
  const r = item as Record<string, unknown>;
  const text = (key: string, optional: boolean): string => {
    const value = r[key];
    if ((value === undefined || value === null) && optional) return '';
    if (typeof value !== 'string') fail(`"${key}" is ${value === undefined ? 'missing' : describe(value)}; it must be a string.`);
    return value as string;
  };
  return { instruction: text('instruction', false), input: text('input', true), output: text('output', false) };
}

export interface AlpacaTokenizeOptions {
  /** Rows of the model's token-embedding table. */
  vocabSize: number;
  /** Tokens kept per example (the end is cut, as the reference's truncation does). */
  maxLength: number;
  source?: string;
}

/** Throws when `tokenizer` can produce ids that the model's embedding table (`vocabSize` rows) does not have. */
export function checkTokenizerFits(tokenizer: TextTokenizer, vocabSize: number, source = 'the tokenizer'): void {
  checkVocabSize(vocabSize);
  if (tokenizer.vocabSize > vocabSize) {
    throw new TrainingDataError(
      `${source} produces ids up to ${tokenizer.vocabSize - 1}, but the model's embedding table has ${vocabSize} rows ` +
      `(ids 0..${vocabSize - 1}); use the tokenizer the model was trained with.`, source);
  }
}

/**
 * Tokenizes Alpaca records like NEFTune's reference: prompt + output (+ EOS when the tokenizer has
 * one), labels -100 over the prompt's tokens, truncated to maxLength. Rows whose prompt fills
 * maxLength have no target and are dropped (counted in `skipped`).
 */
export function tokenizeAlpaca(records: readonly AlpacaRecord[], tokenizer: TextTokenizer, options: AlpacaTokenizeOptions): TokenDataset {
  checkTokenizerFits(tokenizer, options.vocabSize);
  checkMaxLength(options.maxLength);
  const builder = new DatasetBuilder(options.source ?? 'instruction data');
  const eos = tokenizer.eosId;
  for (const record of records) {
    const prompt = alpacaPrompt(record);
    const promptIds = tokenizer.encode(prompt);
    // A post-processor that appends EOS to every encoding must not count it as prompt.
    const promptLength = eos !== undefined && promptIds.at(-1) === eos ? promptIds.length - 1 : promptIds.length;
    const ids = tokenizer.encode(prompt + record.output);
    if (eos !== undefined && ids.at(-1) !== eos) ids.push(eos);
    const length = Math.min(ids.length, options.maxLength);
    const inputIds = Int32Array.from(ids.slice(0, length));
    const labels = inputIds.slice();
    labels.fill(IGNORE, 0, Math.min(promptLength, length));
    builder.add({ inputIds, labels });
  }
  return builder.finish(`every prompt is at least maxLength (${options.maxLength}) tokens long; raise maxLength.`);
}

function checkMaxLength(maxLength: number): void {
  if (!Number.isSafeInteger(maxLength) || maxLength < 2) {
    throw new TrainingDataError(`maxLength must be an integer of at least 2, not ${maxLength}.`, 'options');
  }
}

// ---------------------------------------------------------------------------------------------
// Batching

export interface BatcherOptions {
  batchSize: number;
  /** Longest row; longer rows are cut at the end. Packed rows are filled up to it. */
  maxLength: number;
  /** Shuffle seed: the order of epoch e depends on (seed, e) only. Default 0. */
  seed?: number;
  /** Default true; false keeps file order (evaluation). */
  shuffle?: boolean;
  /**
   * Concatenate rows into rows of up to maxLength, position ids restarting at 0 per segment.
   * A row never spans two packed rows: one that does not fit starts the next packed row.
   */
  pack?: boolean;
  /** Id written at padding positions (masked out; any id in the vocabulary). Default 0. */
  padId?: number;
  /** Drop the last, smaller batch of an epoch. Default false. */
  dropLast?: boolean;
}

/** Where a batcher stands: the next batch is `index` of `epoch`. The rest pins the data and options. */
export interface BatcherState {
  epoch: number;
  index: number;
  seed: number;
  rows: number;
  batchSize: number;
  maxLength: number;
  pack: boolean;
  shuffle: boolean;
}

/**
 * Turns token rows into TokenBatch: a deterministic order per epoch, so any batch can be rebuilt
 * from (epoch, index), and a cursor the trainer drives (`next`, or `batches(epoch, from)`) whose
 * `state()` goes into checkpoints and comes back through `resume`.
 *
 * Packing: labels are -100 at every segment's first position, so no loss is taken on predicting
 * one example's first token from the previous example's last; each segment's loss is then what
 * it would be unpacked. Attention still spans the whole packed row unless the model masks by segment.
 */
export class Batcher {
  private readonly batchSize: number;
  private readonly maxLength: number;
  private readonly seed: number;
  private readonly shuffle: boolean;
  private readonly pack: boolean;
  private readonly padId: bigint;
  private readonly dropLast: boolean;
  private cached: { epoch: number; layout: number[][] } | undefined;
  private cursor = { epoch: 0, index: 0 };

  constructor(private readonly rows: readonly TokenRow[], options: BatcherOptions) {
    const { batchSize, maxLength } = options;
    if (!Number.isSafeInteger(batchSize) || batchSize < 1) {
      throw new TrainingDataError(`batchSize must be a positive integer, not ${batchSize}.`, 'options');
    }
    checkMaxLength(maxLength);
    const seed = options.seed ?? 0;
    if (!Number.isSafeInteger(seed)) throw new TrainingDataError(`seed must be an integer, not ${seed}.`, 'options');
    if (rows.length === 0) throw new TrainingDataError('There are no rows to batch.', 'options');
    this.batchSize = batchSize;
    this.maxLength = maxLength;
    this.seed = seed;
    this.shuffle = options.shuffle ?? true;
    this.pack = options.pack ?? false;
    this.padId = BigInt(options.padId ?? 0);
    this.dropLast = options.dropLast ?? false;
    if (this.batchCount(0) === 0) {
      throw new TrainingDataError(`${rows.length} rows make no full batch of ${batchSize} (dropLast is set); lower batchSize.`, 'options');
    }
  }

  /** Batches in `epoch` (with packing it can differ between epochs). */
  batchCount(epoch: number): number {
    const rows = this.layout(epoch).length;
    return this.dropLast ? Math.floor(rows / this.batchSize) : Math.ceil(rows / this.batchSize);
  }

  /** Batch `index` of `epoch`, rebuilt from scratch; the cursor does not move. */
  batch(epoch: number, index: number): TokenBatch {
    const count = this.batchCount(epoch);
    if (!Number.isSafeInteger(index) || index < 0 || index >= count) {
      throw new RangeError(`Batch ${index} does not exist: epoch ${epoch} has ${count} batches.`);
    }
    const packed = this.layout(epoch).slice(index * this.batchSize, (index + 1) * this.batchSize);
    return this.assemble(packed);
  }

  /** Batches `from`.. of `epoch`; the cursor follows, so `state()` after a batch names the one after it. */
  *batches(epoch: number, from = 0): Generator<TokenBatch> {
    const count = this.batchCount(epoch);
    for (let index = from; index < count; index++) {
      const batch = this.batch(epoch, index);
      this.cursor = index + 1 < count ? { epoch, index: index + 1 } : { epoch: epoch + 1, index: 0 };
      yield batch;
    }
  }

  /** The batch at the cursor; the cursor moves on (into the next epoch after the last batch). */
  next(): { epoch: number; index: number; batch: TokenBatch } {
    const { epoch, index } = this.cursor;
    const batch = this.batches(epoch, index).next().value as TokenBatch;
    return { epoch, index, batch };
  }

  state(): BatcherState {
    return {
      ...this.cursor, seed: this.seed, rows: this.rows.length, batchSize: this.batchSize,
      maxLength: this.maxLength, pack: this.pack, shuffle: this.shuffle,
    };
  }

  /** Continues from a saved state; refuses one made with other data or options (the order would differ). */
  resume(state: BatcherState): void {
    const mine = this.state();
    for (const key of ['seed', 'rows', 'batchSize', 'maxLength', 'pack', 'shuffle'] as const) {
      if (state[key] !== mine[key]) {
        throw new TrainingDataError(
          `The checkpoint's batch order was made with ${key} = ${state[key]}, this run has ${mine[key]}; ` +
          'resume with the same data, seed, batch size, max length and packing.', 'checkpoint');
      }
    }
    if (!Number.isSafeInteger(state.epoch) || state.epoch < 0 || !Number.isSafeInteger(state.index) ||
        state.index < 0 || state.index > this.batchCount(state.epoch)) {
      throw new TrainingDataError(`The checkpoint's data position (epoch ${state.epoch}, batch ${state.index}) does not exist.`, 'checkpoint');
    }
    this.cursor = state.index === this.batchCount(state.epoch) ? { epoch: state.epoch + 1, index: 0 } : { epoch: state.epoch, index: state.index };
  }

  /** Rows of the epoch in order, each a list of source rows (one unless packing). */
  private layout(epoch: number): number[][] {
    if (!Number.isSafeInteger(epoch) || epoch < 0) throw new RangeError(`epoch must be a non-negative integer, not ${epoch}.`);
    if (this.cached?.epoch === epoch) return this.cached.layout;
    const order = Array.from(this.rows, (_, i) => i);
    if (this.shuffle) {
      const random = seededRandom(this.seed, epoch);
      for (let i = order.length - 1; i > 0; i--) {
        const j = Math.floor(random() * (i + 1));
        [order[i], order[j]] = [order[j]!, order[i]!];
      }
    }
    let layout: number[][];
    if (!this.pack) layout = order.map((i) => [i]);
    else {
      layout = [];
      let current: number[] = [];
      let used = 0;
      for (const i of order) {
        const length = Math.min(this.rows[i]!.inputIds.length, this.maxLength);
        if (used + length > this.maxLength) { layout.push(current); current = []; used = 0; }
        current.push(i);
        used += length;
      }
      if (current.length > 0) layout.push(current);
    }
    this.cached = { epoch, layout };
    return layout;
  }

  private assemble(packed: number[][]): TokenBatch {
    const lengthOf = (i: number) => Math.min(this.rows[i]!.inputIds.length, this.maxLength);
    const length = Math.max(...packed.map((segments) => segments.reduce((sum, i) => sum + lengthOf(i), 0)));
    const size = packed.length * length;
    const inputIds = new BigInt64Array(size).fill(this.padId);
    const attentionMask = new BigInt64Array(size);
    const labels = new BigInt64Array(size).fill(IGNORE_INDEX);
    const positionIds = this.pack ? new BigInt64Array(size) : undefined;
    let tokens = 0;
    packed.forEach((segments, r) => {
      let at = r * length;
      for (const i of segments) {
        const row = this.rows[i]!;
        const n = lengthOf(i);
        const targets = row.labels ?? row.inputIds;
        for (let k = 0; k < n; k++) {
          inputIds[at + k] = BigInt(row.inputIds[k]!);
          attentionMask[at + k] = 1n;
          labels[at + k] = BigInt(targets[k]!);
          if (positionIds) positionIds[at + k] = BigInt(k);
        }
        if (this.pack) labels[at] = IGNORE_INDEX;
        at += n;
        tokens += n;
      }
    });
    const batch: TokenBatch = { batch: packed.length, length, inputIds, attentionMask, labels, tokens };
    if (positionIds) batch.positionIds = positionIds;
    return batch;
  }
}

/** murmur3's 32-bit finalizer: a well-mixed hash of a 32-bit integer. */
function mix32(x: number): number {
  x ^= x >>> 16; x = Math.imul(x, 0x85ebca6b);
  x ^= x >>> 13; x = Math.imul(x, 0xc2b2ae35);
  x ^= x >>> 16;
  return x >>> 0;
}

/** Deterministic floats in [0, 1) for (seed, stream): a counter hashed by mix32 (splitmix-style). */
export function seededRandom(seed: number, stream = 0): () => number {
  const high = Math.floor(seed / 2 ** 32);
  let state = mix32((seed >>> 0) ^ mix32(high + 0x632be5ab) ^ mix32(stream ^ 0x9e3779b9));
  return () => {
    state = (state + 0x9e3779b9) | 0;
    return mix32(state) / 2 ** 32;
  };
}
