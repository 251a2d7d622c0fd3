/**
 * The chain a patch emits at one site: U(-1, 1) scaled by alpha / sqrt(L * d), added to the clean
 * embedding. One function per mode computes the scaled noise; `emitNoise` is the one definition
 * of what a patch adds, and strip recognises a site by replaying it (recognise.ts).
 */
import { DataType, dataTypeName } from '../../graph/dtype.js';
import { Value, type Node } from '../../graph/ir.js';
import { NodeProtoType } from '../../graph/proto.js';
import { nodeToProto } from '../../graph/serde.js';
import { attr } from '../../graph/builder.js';
import type { NameAllocator } from '../../graph/names.js';
import { Emitter } from '../emit.js';
import { NOISE_MIN_OPSET } from '../embeddings.js';
import type { NeftuneMode, NormalizedOptions } from './options.js';
import { RESERVED_PREFIX, toBase64, type PatchedSite } from './record.js';
import type { SitePlan } from './sites.js';

/** The lowest default-domain opset each mode's ops exist at. */
export const MIN_OPSET: Record<NeftuneMode, number> = { hf: NOISE_MIN_OPSET, mask: 8, packed: 16 };

/** The prefix of every node and value name the patch adds for the site writing `value`. */
export const chainPrefix = (value: string): string => `${RESERVED_PREFIX}${safe(value)}__`;

function safe(name: string): string { return name.replace(/[^A-Za-z0-9_.]/g, '_').slice(0, 64); }

export interface NoiseSpec {
  mode: NeftuneMode;
  type: DataType;
  alpha: number;
  seed: number | undefined;
  alphaInput: Value | undefined;
  mask: Value | undefined;
  positions: Value | undefined;
}

/** What every mode's noise is computed from. */
interface NoiseInputs {
  spec: NoiseSpec;
  /** Shape(clean), the float alpha, and U(-1, 1) of the clean embedding's shape (float32). */
  shape: Value;
  alpha: Value;
  uniform: Value;
}

/** `hf`: L*d is the product of the last two dims at run time; padding is noised, as HF/TRL do. */
function emitHfNoise(e: Emitter, { shape, alpha, uniform }: NoiseInputs): Value {
  const lastTwo = e.cast(e.sliceTail(shape, -2, 'last_two_dims'), DataType.FLOAT, 'last_two_dims_float');
  const ld = e.reduceProd(lastTwo, 'L_times_d');
  const scale = e.op('Div', [alpha, e.op('Sqrt', [ld], {}, 'sqrt_L_times_d')], {}, 'scale');
  return e.op('Mul', [uniform, scale], {}, 'noise');
}

/** `mask`: L is each row's number of real tokens (the mask's row sum). */
function emitMaskNoise(e: Emitter, inputs: NoiseInputs): Value {
  return emitPerTokenNoise(e, inputs, (maskF) => e.reduceSum(maskF, [1], true, 'row_lengths'));
}

/** `packed`: L is the length of each token's segment; a segment starts where the position ids restart at 0. */
function emitPackedNoise(e: Emitter, inputs: NoiseInputs): Value {
  const positions = inputs.spec.positions!;
  return emitPerTokenNoise(e, inputs, (maskF) => {
    const positions64 = e.cast(positions, DataType.INT64, 'position_ids_i64');
    const starts = e.cast(e.op('Equal', [positions64, e.scalarInt64(0, 'zero')], {}, 'segment_starts'), DataType.INT64, 'segment_starts_i64');
    const segment = e.op('CumSum', [starts, e.scalarInt64(1, 'cumsum_axis')], {}, 'segment_number');
    // Tokens before the first position 0 of a row join its first segment.
    const index = e.op('Max', [e.op('Sub', [segment, e.scalarInt64(1, 'one_i64')], {}, 'segment_index_raw'), e.scalarInt64(0, 'zero_index')], {}, 'segment_index');
    const zeros = e.op('Sub', [maskF, maskF], {}, 'zeros');
    const counts = e.op('ScatterElements', [zeros, index, maskF], { axis: attr.int(1), reduction: attr.string('add') }, 'segment_lengths');
    return e.op('GatherElements', [counts, index], { axis: attr.int(1) }, 'token_segment_length');
  });
}

/** Noise scaled per token by alpha / sqrt(L * d), with L from `lengths`, and zero on padding. */
function emitPerTokenNoise(e: Emitter, { spec, shape, alpha, uniform }: NoiseInputs, lengths: (maskF: Value) => Value): Value {
  const maskF = spec.mask ? e.cast(spec.mask, DataType.FLOAT, 'mask_float')
    // No mask input (packed rows without padding): every position is a real token.
    : e.cast(e.op('Equal', [spec.positions!, spec.positions!], {}, 'all_tokens'), DataType.FLOAT, 'mask_float');
  const d = e.cast(e.sliceTail(shape, -1, 'd'), DataType.FLOAT, 'd_float');
  const L = lengths(maskF);
  // max(L*d, 1): an empty row (L = 0) gets scale alpha, times a zero mask: zero noise, never NaN.
  const ld = e.op('Max', [e.op('Mul', [L, d], {}, 'L_times_d'), e.scalarFloat(1, 'one')], {}, 'L_times_d_at_least_1');
  const scale = e.op('Div', [alpha, e.op('Sqrt', [ld], {}, 'sqrt_L_times_d')], {}, 'scale');
  const perToken = e.unsqueeze(e.op('Mul', [maskF, scale], {}, 'token_scale'), [2], 'token_scale_3d');
  return e.op('Mul', [uniform, perToken], {}, 'noise');
}

const NOISE_BY_MODE: Record<NeftuneMode, (e: Emitter, inputs: NoiseInputs) => Value> = {
  hf: emitHfNoise, mask: emitMaskNoise, packed: emitPackedNoise,
};

/**
 * Emits the noise chain from `clean` to `original`. The one definition of what a patch adds:
 * strip recognises a site by matching this same emission (see `chainTemplate`).
 * Returns the alpha value (the alpha input, or the output of the alpha Constant).
 */
export function emitNoise(e: Emitter, clean: Value, original: Value, spec: NoiseSpec): Value {
  const { type } = spec;
  const alpha = spec.alphaInput ?? e.scalarFloat(spec.alpha, 'alpha');
  const shape = e.op('Shape', [clean], {}, 'shape');

  // ORT's RandomUniformLike takes float/double/fp16 inputs; for bf16 it gets a float tensor of the same shape.
  const uniformInput = type === DataType.BFLOAT16 ? e.op('ConstantOfShape', [shape], {}, 'zeros') : clean;
  const uniformAttrs: Record<string, ReturnType<typeof attr.float>> = { dtype: attr.int(DataType.FLOAT), low: attr.float(-1), high: attr.float(1) };
  if (spec.seed !== undefined) uniformAttrs['seed'] = attr.float(spec.seed);
  const uniform = e.op('RandomUniformLike', [uniformInput], uniformAttrs, 'uniform');

  let noise = NOISE_BY_MODE[spec.mode](e, { spec, shape, alpha, uniform });
  if (type === DataType.BFLOAT16) {
    // ONNX Runtime's CPU and wasm EPs have no bfloat16 Add: add in float32, round once to bfloat16.
    // bfloat16 -> float32 is exact, so alpha 0 still gives back the clean embedding bit for bit.
    const sum = e.op('Add', [e.cast(clean, DataType.FLOAT, 'clean_float'), noise], {}, 'add_float');
    e.op('Cast', [sum], { to: attr.int(DataType.BFLOAT16) }, 'add', original);
  } else {
    if (type !== DataType.FLOAT) noise = e.cast(noise, type, 'noise_cast');
    e.op('Add', [clean, noise], {}, 'add', original);
  }
  return alpha;
}

/** Adds the planned site's chain: the site node writes a fresh clean value, the chain's Add the original one. */
export function emitSite(plan: SitePlan, opts: NormalizedOptions, names: NameAllocator, opset: number, alphaInput: Value | undefined): PatchedSite {
  const { candidate: c, siteNode, type } = plan;
  const graph = siteNode.graph!;
  const original = siteNode.outputs[0]!;
  const sourceNode = nonCanonicalBytes(siteNode);
  const clean = new Value(names.fresh(`${RESERVED_PREFIX}${original.name}__clean`));
  siteNode.replaceOutput(0, clean);
  const e = new Emitter(graph, siteNode, names, chainPrefix(original.name), opset);
  emitNoise(e, clean, original, { mode: opts.mode, type, alpha: opts.alpha, seed: opts.seed, alphaInput, mask: plan.mask, positions: plan.positions });
  return {
    graphPath: c.graphPath, lookup: c.nodeLabel, table: c.table.name, role: c.role,
    value: original.name, clean: clean.name, dtype: dataTypeName(type), afterScale: plan.afterScale,
    maskInput: plan.mask?.name ?? null, positionIdsInput: plan.positions?.name ?? null,
    addedNodes: e.added.map((n) => n.name!), ...(sourceNode !== undefined ? { sourceNode: toBase64(sourceNode) } : {}),
  };
}

/**
 * The node's bytes as read, when they differ from how this library encodes it (fields out of the
 * usual order, repeated fields, invalid UTF-8): the patch edits the node, so strip needs them back.
 */
function nonCanonicalBytes(node: Node): Uint8Array | undefined {
  const source = node.sourceBytes();
  if (source === undefined) return undefined;
  const canonical = NodeProtoType.encode(nodeToProto(node)).finish();
  if (canonical.length === source.length && canonical.every((b, i) => b === source[i])) return undefined;
  return source;
}

/** The default-domain opset a patch adds to a model that imports none (contrib ops only). */
export function addedOpsetVersion(irVersion: number, mode: NeftuneMode): number {
  // The newest opset the IR version allows, capped where ONNX Runtime support is broad.
  return Math.max(MIN_OPSET[mode], Math.min(21, maxOpsetForIrVersion(irVersion)));
}

/** The newest default-domain opset a given IR version can carry (from the ONNX versioning table). */
function maxOpsetForIrVersion(ir: number): number {
  const table: Record<number, number> = { 3: 8, 4: 9, 5: 10, 6: 11, 7: 14, 8: 18, 9: 20, 10: 22, 11: 23, 12: 24, 13: 25 };
  return table[ir] ?? (ir > 13 ? 25 : 8);
}
