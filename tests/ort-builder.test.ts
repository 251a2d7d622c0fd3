import { test } from 'node:test';
import assert from 'node:assert/strict';
import ort from 'onnxruntime-node';
import { DataType, bfloat16BitsToFloat32, decodeModel, encodeModel, float16BitsToFloat32, type Model } from '../src/graph/index.js';
import { buildTinyBert, buildTinyGpt, buildTinyT5, type FloatType } from '../examples/models.js';

const ids = [3, 0, 63, 7, 7, 12, 1, 40];
const int64 = (values: number[], dims: number[]) => new ort.Tensor('int64', BigInt64Array.from(values.map(BigInt)), dims);

/** Table row `row` as float32, decoded from the model's stored bytes. */
function tableRow(model: Model, table: string, row: number, dim: number): number[] {
  const tensor = model.graph.initializer(table)!.initializer!;
  const bytes = tensor.rawBytes();
  const out: number[] = [];
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  for (let j = 0; j < dim; j++) {
    const i = row * dim + j;
    switch (tensor.dataType) {
      case DataType.FLOAT: out.push(view.getFloat32(i * 4, true)); break;
      case DataType.FLOAT16: out.push(float16BitsToFloat32(view.getUint16(i * 2, true))); break;
      case DataType.BFLOAT16: out.push(bfloat16BitsToFloat32(view.getUint16(i * 2, true))); break;
      default: throw new Error('unexpected table type');
    }
  }
  return out;
}

const cases: Array<{ kind: string; build: (o: { dtype: FloatType; exposeEmbeddings: boolean }) => Model; lookups: Array<[table: string, output: string, input: string]> }> = [
  { kind: 'gpt', build: buildTinyGpt, lookups: [['transformer.wte.weight', 'inputs_embeds', 'input_ids']] },
  { kind: 'bert', build: buildTinyBert, lookups: [['embeddings.word_embeddings.weight', 'word_embeds', 'input_ids']] },
  { kind: 't5', build: buildTinyT5, lookups: [['shared.weight', 'encoder_embeds', 'input_ids'], ['shared.weight', 'decoder_embeds', 'decoder_input_ids']] },
];

for (const { kind, build, lookups } of cases) {
  for (const dtype of ['float', 'float16', 'bfloat16'] as const) {
    test(`builder-made ${kind} (${dtype}) runs in onnxruntime-node and its token Gather returns the table rows`, async () => {
      const model = build({ dtype, exposeEmbeddings: true });
      const bytes = encodeModel(model);
      const session = await ort.InferenceSession.create(bytes);
      const dim = 16;
      // Dynamic batch and sequence: two different shapes through the same session.
      for (const [batch, seq] of [[2, 4], [1, 8]] as const) {
        const feeds: Record<string, ort.Tensor> = {};
        for (const name of session.inputNames) {
          feeds[name] = name === 'token_type_ids' ? int64(new Array(batch * seq).fill(0), [batch, seq])
            : name === 'attention_mask' ? int64(new Array(batch * seq).fill(1), [batch, seq])
            : int64(ids.slice(0, batch * seq), [batch, seq]);
        }
        const out = await session.run(feeds);
        for (const [table, output, input] of lookups) {
          const name = dtype === 'float' ? output : `${output}_float`;
          const got = out[name]!;
          assert.deepEqual(got.dims, [batch, seq, dim]);
          const fed = [...(feeds[input]!.data as BigInt64Array)].map(Number);
          const expected = fed.flatMap((id) => tableRow(decodeModel(bytes), table, id, dim));
          assert.deepEqual([...(got.data as Float32Array)], expected, `${output}: exact table rows for ids ${fed}`);
        }
      }
      await session.release();
    });
  }
}
