/**
 * NEFTune noise a training run can resume: the patch's RandomUniformLike nodes in a step graph are
 * replaced by a counter-based generator, U(-1, 1) = hash(key, site, element index), with `key` a
 * uint64 graph input the Trainer feeds per micro-batch (derived from the run's seed and the step).
 *
 * Why not RandomUniformLike: ONNX Runtime seeds it once per session (from the seed attribute, or
 * from a per-process sequence when unseeded) and advances it per run, so a new session (a resumed
 * run) replays the noise of step 1. Here the noise of step k is a pure function of (seed, k): a
 * resumed run draws exactly what the uninterrupted one drew, and so does onnxruntime-web.
 * Only the step graph changes; the forward model keeps the patch as it is (strip still applies).
 */
import { attr, makeAttribute, tensorType, type AttributeInput } from '../graph/builder.js';
import { DataType } from '../graph/dtype.js';
import { Node, Value, type Model } from '../graph/ir.js';
import { NameAllocator } from '../graph/names.js';
import { Tensor } from '../graph/tensor.js';
import { readPatchRecord } from '../passes/neftune/record.js';

export const NOISE_KEY_INPUT = 'neftune_noise_key';

const MASK64 = (1n << 64n) - 1n;
const GOLDEN = 0x9e3779b97f4a7c15n;
const MIX1 = 0xbf58476d1ce4e5b9n;
const MIX2 = 0x94d049bb133111ebn;

/** SplitMix64's finalizer (in JavaScript, for keys). */
export function mix64(x: bigint): bigint {
  let z = (x + GOLDEN) & MASK64;
  z = ((z ^ (z >> 30n)) * MIX1) & MASK64;
  z = ((z ^ (z >> 27n)) * MIX2) & MASK64;
  return z ^ (z >> 31n);
}

/** The noise key of one micro-batch: distinct for every (seed, update step, micro-batch). */
export function noiseKey(seed: number, step: number, micro: number): bigint {
  return mix64(mix64(mix64(BigInt.asUintN(64, BigInt(seed))) ^ BigInt(step)) ^ BigInt(micro));
}

/**
 * Replaces every RandomUniformLike the NEFTune patch added (per its record) by the keyed generator;
 * adds the uint64 scalar input `neftune_noise_key`. Returns the number of nodes replaced (0: the
 * model carries no patch noise, nothing changed).
 */
export function keyPatchNoise(model: Model): number {
  const record = readPatchRecord(model);
  if (!record) return 0;
  const added = new Set(record.sites.flatMap((s) => s.addedNodes));
  const graph = model.graph;
  const targets = [...graph.nodes].filter((n) => n.isOp('RandomUniformLike') && added.has(n.name ?? ''));
  if (!targets.length) return 0;
  const names = new NameAllocator(model);
  const key = new Value(names.has(NOISE_KEY_INPUT) ? names.fresh(NOISE_KEY_INPUT) : (names.add(NOISE_KEY_INPUT), NOISE_KEY_INPUT));
  key.info = { name: key.name, type: tensorType(DataType.UINT64, []) };
  graph.addInput(key);
  targets.forEach((random, site) => {
    const emit = (op: string, inputs: Value[], attributes: Record<string, AttributeInput> = {}): Value => {
      const out = new Value(names.fresh(`${random.name}__keyed`));
      graph.insertBefore(random, new Node(op, inputs, [out], { name: names.fresh(`${random.name}__keyed_${op}`), attributes: Object.entries(attributes).map(([k, v]) => makeAttribute(k, v)) }));
      return out;
    };
    const u64 = (v: bigint) => emit('Constant', [], { value: attr.tensor(Tensor.fromArray(DataType.UINT64, [], BigUint64Array.from([v]))) });
    const i64 = (v: number) => emit('Constant', [], { value: attr.tensor(Tensor.fromArray(DataType.INT64, [], BigInt64Array.from([BigInt(v)]))) });
    const shr = (x: Value, s: bigint) => emit('BitShift', [x, u64(s)], { direction: attr.string('RIGHT') });
    const shape = emit('Shape', [random.input(0)!]);
    const count = emit('ReduceProd', [shape], { keepdims: attr.int(0) });
    const index = emit('Cast', [emit('Reshape', [emit('Range', [i64(0), count, i64(1)]), shape])], { to: attr.int(DataType.UINT64) });
    // z = index * golden + key + site; then SplitMix64's mixing with Add in place of Xor (Xor
    // needs opset 18; x + (x >> s) is a bijection as well, and the statistics are checked in tests).
    let z = emit('Add', [emit('Mul', [index, u64(GOLDEN)]), emit('Add', [key, u64(mix64(BigInt(site + 1)))])]);
    z = emit('Mul', [emit('Add', [z, shr(z, 30n)]), u64(MIX1)]);
    z = emit('Mul', [emit('Add', [z, shr(z, 27n)]), u64(MIX2)]);
    z = emit('Add', [z, shr(z, 31n)]);
    // Top 23 bits k: u = (2k + 1) / 2^23 - 1, exact in float32, symmetric in (-1, 1).
    const odd = emit('Add', [emit('Mul', [shr(z, 41n), u64(2n)]), u64(1n)]);
    const scaled = emit('Mul', [emit('Cast', [odd], { to: attr.int(DataType.FLOAT) }), emit('Constant', [], { value: attr.tensor(Tensor.fromArray(DataType.FLOAT, [], [2 ** -23])) })]);
    let uniform = emit('Sub', [scaled, emit('Constant', [], { value: attr.tensor(Tensor.fromArray(DataType.FLOAT, [], [1])) })]);
    const dtype = random.attribute('dtype')?.proto.i;
    if (dtype !== undefined && Number(dtype) !== DataType.FLOAT) uniform = emit('Cast', [uniform], { to: attr.int(Number(dtype)) });
    random.output(0).replaceAllUsesWith(uniform);
    graph.remove(random);
  });
  return targets.length;
}
