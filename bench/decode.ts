/**
 * In-process decode of one model file, in a fresh process: the first call (what the CLI pays) and
 * then `repeats` warmed calls. Cases: `decodeModel`; `protobufjs` (reflection decode through the
 * official schema, `ModelProtoType.decode`); `inspect` (decodeModel + findEmbeddings); `patch`
 * (decodeModel + applyNeftune + encodeModel). Prints JSON: one record of phase milliseconds per call,
 * the first call first. Usage: node dist/bench/decode.js <model.onnx> <case> [repeats]
 */
import { readFileSync } from 'node:fs';
import { decodeModel, encodeModel } from '../src/graph/index.js';
import { ModelProtoType } from '../src/graph/proto.js';
import { applyNeftune, findEmbeddings } from '../src/passes/index.js';

export const DECODE_CASES = ['decodeModel', 'protobufjs', 'inspect', 'patch'] as const;
export type DecodeCase = (typeof DECODE_CASES)[number];
export type PhaseMs = Record<string, number>;

/** Runs `phases` in order, each given the previous one's result, timing each. */
function timed(phases: Record<string, (input: never) => unknown>, input: unknown): PhaseMs {
  const ms: PhaseMs = {};
  for (const [name, run] of Object.entries(phases)) {
    const t = performance.now();
    input = run(input as never);
    ms[name] = performance.now() - t;
  }
  return ms;
}

const CASES: Record<DecodeCase, Record<string, (input: never) => unknown>> = {
  decodeModel: { decode: decodeModel },
  protobufjs: { decode: (bytes: Uint8Array) => ModelProtoType.decode(bytes) },
  inspect: { decode: decodeModel, findEmbeddings: (model: ReturnType<typeof decodeModel>) => findEmbeddings(model) },
  patch: {
    decode: decodeModel,
    applyNeftune: (model: ReturnType<typeof decodeModel>) => { applyNeftune(model, {}); return model; },
    encodeModel: (model: ReturnType<typeof decodeModel>) => encodeModel(model),
  },
};

export function decodeRuns(file: string, which: DecodeCase, repeats: number): PhaseMs[] {
  const bytes = readFileSync(file);
  return Array.from({ length: 1 + repeats }, () => timed(CASES[which], bytes));
}

if (process.argv[1]?.endsWith('decode.js')) {
  const [file, which, repeats] = process.argv.slice(2) as [string, DecodeCase, string | undefined];
  if (!DECODE_CASES.includes(which)) throw new Error(`case must be one of ${DECODE_CASES.join(', ')}`);
  console.log(JSON.stringify(decodeRuns(file, which, Number(repeats ?? 5))));
}
