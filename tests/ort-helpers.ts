import ort from 'onnxruntime-node';
import { encodeModel, type Model } from '../src/graph/index.js';
import { packedPositionIds } from '../src/verify/verify.js';

export { ort };

export async function sessionFor(model: Model): Promise<ort.InferenceSession> {
  return ort.InferenceSession.create(encodeModel(model));
}

export const int64Tensor = (values: number[], dims: number[]) => new ort.Tensor('int64', BigInt64Array.from(values.map(BigInt)), dims);
export const floatScalar = (value: number) => new ort.Tensor('float32', Float32Array.from([value]), []);

/** Deterministic token ids, masks with padding on the later rows, and packed position ids. */
export function makeFeeds(batch: number, seq: number, vocab: number) {
  const ids = Array.from({ length: batch * seq }, (_, i) => (i * 7 + 3) % vocab);
  const lengths = Array.from({ length: batch }, (_, b) => (b === batch - 1 ? 0 : Math.max(1, seq - 3 * b)));
  const mask = Array.from({ length: batch * seq }, (_, i) => (i % seq < lengths[Math.floor(i / seq)]! ? 1 : 0));
  // Packed rows: segments of lengths 5, 3, 1, ... restart their position ids at 0.
  const positions = packedPositionIds([batch, seq]);
  return { ids, mask, lengths, positions };
}

/** Feeds for every input a builder-made model may have. */
export function feedsFor(session: ort.InferenceSession, batch: number, seq: number, vocab: number, extra: Record<string, ort.Tensor> = {}) {
  const f = makeFeeds(batch, seq, vocab);
  const all: Record<string, ort.Tensor> = {
    input_ids: int64Tensor(f.ids, [batch, seq]),
    decoder_input_ids: int64Tensor(f.ids.map((x) => (x * 5 + 1) % vocab), [batch, seq]),
    token_type_ids: int64Tensor(f.ids.map((x) => x % 2), [batch, seq]),
    attention_mask: int64Tensor(f.mask, [batch, seq]),
    position_ids: int64Tensor(f.positions, [batch, seq]),
    ...extra,
  };
  const feeds: Record<string, ort.Tensor> = {};
  for (const name of session.inputNames) {
    if (!all[name]) throw new Error(`test does not know how to feed ${name}`);
    feeds[name] = all[name]!;
  }
  return { feeds, ...f };
}

export const asNumbers = (t: ort.Tensor): number[] => Array.from(t.data as Float32Array);
