/**
 * Text to token ids through a Hugging Face `tokenizer.json`, with @huggingface/tokenizers: pure
 * JavaScript, no dependencies, no network (it takes the parsed JSON; nothing is fetched), and the
 * same code runs in Node and browsers. Browser-safe: parse from strings or objects only.
 */
import { Tokenizer } from '@huggingface/tokenizers';
import { TrainingDataError } from './data.js';

/** What the data loaders need from a tokenizer. */
export interface TextTokenizer {
  /** Ids of `text`, with the special tokens the tokenizer's post-processor adds (BOS, ...). */
  encode(text: string): number[];
  /** End-of-sequence id, when the tokenizer has one. */
  readonly eosId: number | undefined;
  /** Highest id the tokenizer can produce, plus one. */
  readonly vocabSize: number;
}

export interface LoadTokenizerOptions {
  /** Where the JSON came from, for messages (a file name). */
  source?: string;
  /** tokenizer_config.json's contents, when the model ships one: its `eos_token` names EOS. */
  config?: Record<string, unknown>;
  /** The EOS token's text; overrides `config`. */
  eosToken?: string;
}

/**
 * EOS names used by common tokenizers. tokenizer.json itself does not say which token ends a
 * sequence (tokenizer_config.json does); without a config, a special added token with one of
 * these names is taken.
 */
const KNOWN_EOS = ['</s>', '<|endoftext|>', '<|end_of_text|>', '<eos>', '<|eot_id|>', '<|im_end|>', '<|end|>'];

/** Parses a tokenizer.json (text or parsed object) into a TextTokenizer. */
export function loadTokenizer(json: string | object, options: LoadTokenizerOptions = {}): TextTokenizer {
  const source = options.source ?? 'tokenizer.json';
  let spec: unknown = json;
  if (typeof json === 'string') {
    try { spec = JSON.parse(json); } catch (error) {
      throw new TrainingDataError(`${source} is not JSON (${(error as Error).message}); pass a Hugging Face tokenizer.json.`, source);
    }
  }
  if (typeof spec !== 'object' || spec === null || Array.isArray(spec) || !('model' in spec)) {
    throw new TrainingDataError(`${source} is not a Hugging Face tokenizer.json (no "model" object); pass the tokenizer.json saved with the model.`, source);
  }
  const withDefaults = { added_tokens: [], normalizer: null, pre_tokenizer: null, post_processor: null, decoder: null, ...spec };
  let tokenizer: Tokenizer;
  try {
    tokenizer = new Tokenizer(withDefaults, options.config ?? {});
  } catch (error) {
    throw new TrainingDataError(`${source} could not be loaded as a tokenizer: ${(error as Error).message}.`, source);
  }
  const vocab = tokenizer.get_vocab(true);
  let maxId = -1;
  for (const id of vocab.values()) if (id > maxId) maxId = id;
  if (maxId < 0) throw new TrainingDataError(`${source} has an empty vocabulary; pass the tokenizer.json saved with the model.`, source);
  return {
    encode: (text) => tokenizer.encode(text).ids,
    eosId: eosIdOf(tokenizer, options),
    vocabSize: maxId + 1,
  };
}

function eosIdOf(tokenizer: Tokenizer, options: LoadTokenizerOptions): number | undefined {
  const configured = options.eosToken ?? tokenText(options.config?.['eos_token']);
  if (configured !== undefined) {
    const id = tokenizer.token_to_id(configured);
    if (id === undefined) {
      throw new TrainingDataError(`The EOS token ${JSON.stringify(configured)} is not in the tokenizer's vocabulary; name a token it has.`, options.source ?? 'tokenizer.json');
    }
    return id;
  }
  const special = tokenizer.get_added_tokens_decoder();
  for (const name of KNOWN_EOS) {
    for (const [id, token] of special) if (token.special && token.content === name) return id;
  }
  return undefined;
}

/** tokenizer_config.json writes a token as a string or as `{ content: string, ... }`. */
function tokenText(value: unknown): string | undefined {
  if (typeof value === 'string') return value;
  if (typeof value === 'object' && value !== null && typeof (value as { content?: unknown }).content === 'string') {
    return (value as { content: string }).content;
  }
  return undefined;
}
