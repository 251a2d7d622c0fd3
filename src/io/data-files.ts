/**
 * Training data and tokenizers from disk. Token JSONL is streamed (only the current line is held
 * as text); instruction data and tokenizer.json are small and read whole.
 */
import { createReadStream, existsSync, readFileSync } from 'node:fs';
import { OnnxNeftuneError } from '../graph/errors.js';
import path from 'node:path';
import {
  TrainingDataError, parseAlpaca, readTokenJsonl, tokenizeAlpaca, type AlpacaTokenizeOptions, type TokenDataset,
} from '../training/data.js';
import { loadTokenizer, type TextTokenizer } from '../training/tokenize.js';
import { FileAccessError } from './errors.js';
import { errnoOf } from './fs-facts.js';

const unreadable = (file: string, error: unknown) =>
  new FileAccessError(`Cannot read ${file}: ${errnoOf(error)}; check the path and its permissions.`, { cause: error });

function readText(file: string): string {
  try { return readFileSync(file, 'utf8'); } catch (error) { throw unreadable(file, error); }
}

/** Token-id JSONL from `file`, streamed in 64 KiB chunks. */
export async function readTokenJsonlFile(file: string, options: { vocabSize: number }): Promise<TokenDataset> {
  const stream = createReadStream(file, { highWaterMark: 64 * 1024 });
  try {
    return await readTokenJsonl(stream as AsyncIterable<Uint8Array>, { ...options, source: file });
  } catch (error) {
    throw error instanceof OnnxNeftuneError ? error : unreadable(file, error);
  } finally {
    stream.destroy();
  }
}

/**
 * A tokenizer.json file; a tokenizer_config.json beside it, when present, names the EOS token
 * (as transformers reads it).
 */
export function readTokenizerFile(file: string): TextTokenizer {
  const text = readText(file);
  const configFile = path.join(path.dirname(file), 'tokenizer_config.json');
  let config: Record<string, unknown> | undefined;
  if (existsSync(configFile)) {
    try { config = JSON.parse(readText(configFile)) as Record<string, unknown>; } catch (error) {
      if (error instanceof OnnxNeftuneError) throw error;
      throw new TrainingDataError(`${configFile} is not JSON (${(error as Error).message}); fix or remove it.`, configFile);
    }
  }
  return loadTokenizer(text, config ? { source: file, config } : { source: file });
}

/** Alpaca instruction data (JSON array or JSON lines) from `file`, tokenized with `tokenizer`. */
export function readAlpacaFile(file: string, tokenizer: TextTokenizer, options: Omit<AlpacaTokenizeOptions, 'source'>): TokenDataset {
  return tokenizeAlpaca(parseAlpaca(readText(file), file), tokenizer, { ...options, source: file });
}
