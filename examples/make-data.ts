/**
 * Generates the bundled training data in examples/data/, deterministically (a test checks that the
 * committed files are what this writes):
 * - tiny-tokens.jsonl: token-id rows a tiny causal LM can learn (counting sequences, vocab 64);
 * - tiny-alpaca.json + tokenizer.json: Alpaca-style instructions over a few words, and a WordPiece
 *   tokenizer.json covering them and the Alpaca template.
 * Usage: node dist/examples/make-data.js [folder]
 */
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { seededRandom } from '../src/training/data.js';
import { writeFileAtomic } from '../src/io/index.js';

/** Token layout of tiny-tokens.jsonl: 0 pad, 1 BOS, 2 EOS, 3..5 "count by 1, 2, 3", 6..63 numbers. */
export const TINY_TOKENS = { vocab: 64, pad: 0, bos: 1, eos: 2, firstStep: 3, firstNumber: 6 } as const;

/**
 * Rows `BOS STEP(d) n, n+d, n+2d, ... EOS` with numbers wrapping around the 58 number tokens: after
 * the step token, every next number is determined, so the loss of a learning model falls well
 * below log(64).
 */
export function tinyTokenRows(count = 320, seed = 13): number[][] {
  const random = seededRandom(seed);
  const pick = (n: number) => Math.floor(random() * n);
  const { vocab, bos, eos, firstStep, firstNumber } = TINY_TOKENS;
  const numbers = vocab - firstNumber;
  const rows: number[][] = [];
  for (let r = 0; r < count; r++) {
    const step = 1 + pick(3);
    const length = 6 + pick(19);
    let n = pick(numbers);
    const row = [bos, firstStep + step - 1];
    for (let i = 0; i < length; i++, n = (n + step) % numbers) row.push(firstNumber + n);
    row.push(eos);
    rows.push(row);
  }
  return rows;
}

export const tinyTokensJsonl = (): string => tinyTokenRows().map((ids) => `${JSON.stringify({ input_ids: ids })}\n`).join('');

const COLORS = ['red', 'blue', 'green', 'yellow', 'black', 'white'];
const COUNTS = ['', '', 'two', 'three', 'four'];

/** Instruction records: repeat, reverse, count, first or last of a few color words; some without input. */
export function tinyAlpacaRecords(count = 48, seed = 7): { instruction: string; input: string; output: string }[] {
  const random = seededRandom(seed);
  const pick = (n: number) => Math.floor(random() * n);
  const records = [];
  for (let r = 0; r < count; r++) {
    const words = Array.from({ length: 2 + pick(3) }, () => COLORS[pick(COLORS.length)]!);
    const task = pick(6);
    if (task === 5) { records.push({ instruction: 'Name a color.', input: '', output: COLORS[pick(COLORS.length)]! }); continue; }
    const input = words.join(' ');
    const [instruction, output] = [
      ['Repeat the words.', input],
      ['Reverse the words.', [...words].reverse().join(' ')],
      ['Count the words.', COUNTS[words.length]!],
      ['Name the first word.', words[0]!],
      ['Name the last word.', words.at(-1)!],
    ][task]!;
    records.push({ instruction: instruction!, input, output: output! });
  }
  return records;
}

const SPECIAL = ['[PAD]', '[UNK]', '</s>'];
const WORDS = [
  // The Alpaca template (lowercased, split by the Whitespace pre-tokenizer).
  'below', 'is', 'an', 'instruction', 'that', 'describes', 'a', 'task', ',', 'paired', 'with', 'input', 'provides',
  'further', 'context', '.', 'write', 'response', 'appropriately', 'completes', 'the', 'request', '###', ':',
  // The tasks.
  'repeat', 'reverse', 'count', 'words', 'name', 'first', 'last', 'word', 'color', ...COLORS, 'two', 'three', 'four',
];

/** A Hugging Face tokenizer.json (WordPiece, lowercasing, whitespace split) with [PAD] 0, [UNK] 1, </s> 2. */
export function tinyTokenizerSpec(): object {
  const tokens = [...SPECIAL, ...WORDS];
  return {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: SPECIAL.map((content, id) => ({
      id, content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true,
    })),
    normalizer: { type: 'Lowercase' },
    pre_tokenizer: { type: 'Whitespace' },
    post_processor: null,
    decoder: { type: 'WordPiece', prefix: '##', cleanup: true },
    model: {
      type: 'WordPiece', unk_token: '[UNK]', continuing_subword_prefix: '##', max_input_chars_per_word: 100,
      vocab: Object.fromEntries(tokens.map((t, i) => [t, i])),
    },
  };
}

/** Every file this writes, by name, with its exact text. */
export const DATA_FILES: Record<string, () => string> = {
  'tiny-tokens.jsonl': tinyTokensJsonl,
  'tiny-alpaca.json': () => `${JSON.stringify(tinyAlpacaRecords(), null, 2)}\n`,
  'tokenizer.json': () => `${JSON.stringify(tinyTokenizerSpec(), null, 2)}\n`,
};

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(path.resolve(process.argv[1])).href) {
  const dir = path.resolve(process.argv[2] ?? 'examples/data');
  mkdirSync(dir, { recursive: true });
  for (const [name, make] of Object.entries(DATA_FILES)) {
    const text = make();
    await writeFileAtomic(path.join(dir, name), [new TextEncoder().encode(text)]);
    console.log(`wrote ${path.join(path.relative(process.cwd(), dir) || '.', name)} (${text.length} bytes)`);
  }
}
