/**
 * One batch of token rows as the step graph consumes it: every array is row-major
 * [batch, length], int64 as ONNX wants. Data loaders produce it; the Trainer feeds it.
 */
export const IGNORE_INDEX = -100n;

export interface TokenBatch {
  /** Rows. */
  batch: number;
  /** Columns (tokens per row, padding included). */
  length: number;
  inputIds: BigInt64Array;
  /** 1 for a real token, 0 for padding. */
  attentionMask: BigInt64Array;
  /**
   * Target of each position before the shift (Hugging Face convention: the causal-LM loss
   * compares logits at i with labels at i + 1); IGNORE_INDEX where no loss is taken
   * (prompt tokens, padding).
   */
  labels: BigInt64Array;
  /** Position of each token inside its packed segment (restarts at 0); present when rows are packed. */
  positionIds?: BigInt64Array;
  /** Real (non-padding) tokens in the batch. */
  tokens: number;
}
