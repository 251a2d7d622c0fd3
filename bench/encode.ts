/**
 * In-process encode of a ~600 MB single-file model: the library's encodeModel (and streaming
 * encodeModelTo into a sink that only counts) against protobufjs reflection encoding of the same
 * ModelProto, interleaved rounds, medians. Usage: node dist/bench/encode.js [rounds]
 */
import { decodeModel, decodeModelProto, encodeModel } from '../src/graph/index.js';
import { ModelProtoType } from '../src/graph/proto.js';
import { buildLargeGpt } from './models.js';

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

export function encodeBench(rounds = 5): { bytes: number; ms: Record<string, number> } {
  const bytes = encodeModel(buildLargeGpt());
  const model = decodeModel(bytes);
  const proto = decodeModelProto(bytes);
  const cases: Record<string, () => number> = {
    encodeModel: () => encodeModel(model).length,
    'protobufjs reflection': () => ModelProtoType.encode(proto as never).finish().length,
  };
  const times: Record<string, number[]> = Object.fromEntries(Object.keys(cases).map((k) => [k, []]));
  for (let r = 0; r < rounds; r++) {
    for (const [name, run] of Object.entries(cases)) {
      const t = performance.now();
      const n = run();
      times[name]!.push(performance.now() - t);
      if (n !== bytes.length) throw new Error(`${name} wrote ${n} bytes, expected ${bytes.length}`);
    }
  }
  return { bytes: bytes.length, ms: Object.fromEntries(Object.entries(times).map(([k, v]) => [k, median(v)])) };
}

if (process.argv[1]?.endsWith('encode.js')) console.log(JSON.stringify(encodeBench(Number(process.argv[2] ?? 5))));
