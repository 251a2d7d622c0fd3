/**
 * Recognising a patch in a graph by structure: a chain is the patch's only when it is exactly what
 * `emitNoise` emits (op types, domains, attributes, wiring, names), so strip never takes a node
 * of the model for the patch.
 */
import { DataType } from '../../graph/dtype.js';
import { Graph, Model, Node, Value, type Attribute } from '../../graph/ir.js';
import { NameAllocator } from '../../graph/names.js';
import { AttributeProtoType } from '../../graph/proto.js';
import { Tensor } from '../../graph/tensor.js';
import { Emitter } from '../emit.js';
import type { NeftuneMode } from './options.js';
import { NOISE_TYPES, RESERVED_PREFIX, isString, markedNodes, recordState } from './record.js';
import { chainPrefix, emitNoise } from './chain.js';
import { findInput } from './sites.js';

/**
 * Whether the model carries a NEFTune patch: a readable patch record (or several conflicting
 * ones), or a chain of nodes with the structure the patch emits. Nodes named with the reserved
 * prefix alone do not count: a user may name their own nodes so.
 */
export function isPatched(model: Model): boolean {
  const state = recordState(model);
  if (state.kind === 'valid' || state.kind === 'conflicting') return true;
  return findChains(model, markedNodes(model)).length > 0;
}

export interface Variant { mode: NeftuneMode; withMask: boolean; withPositions: boolean }
/** Every input form of the noise chain: hf reads neither; mask reads the mask; packed reads positions, and the mask when present. */
export const VARIANTS: readonly Variant[] = [
  { mode: 'hf', withMask: false, withPositions: false },
  { mode: 'mask', withMask: true, withPositions: false },
  { mode: 'packed', withMask: true, withPositions: true },
  { mode: 'packed', withMask: false, withPositions: true },
];
export type AlphaForm = 'constant' | 'input';

/** The chain `emitNoise` produces for one form, on placeholder values, in emission order. */
interface ChainTemplate {
  nodes: Node[];
  root: Node;
  clean: Value;
  mask: Value | undefined;
  positions: Value | undefined;
  alphaInput: Value | undefined;
  alphaConstant: Node | undefined;
  externals: Set<Value>;
}

const templates = new Map<string, ChainTemplate>();

/** Built by running `emitNoise` itself, so recognition can never drift from what the patch emits. */
export function chainTemplate(opset: number, variant: Variant, type: DataType, alphaForm: AlphaForm): ChainTemplate {
  const key = `${opset}|${variant.mode}|${variant.withMask}|${type}|${alphaForm}`;
  const cached = templates.get(key);
  if (cached) return cached;
  const graph = new Graph({});
  const clean = new Value('clean');
  const anchor = new Node('Lookup', [], [clean]);
  graph.append(anchor);
  const input = (name: string) => graph.addInput(new Value(name));
  const mask = variant.withMask ? input('mask') : undefined;
  const positions = variant.withPositions ? input('positions') : undefined;
  const alphaInput = alphaForm === 'input' ? input('alpha') : undefined;
  const e = new Emitter(graph, anchor, new NameAllocator(new Model({}, graph)), 'template__', opset);
  const alpha = emitNoise(e, clean, new Value('value'), { mode: variant.mode, type, alpha: 1, seed: undefined, alphaInput, mask, positions });
  const template: ChainTemplate = {
    nodes: e.added, root: e.added.at(-1)!, clean, mask, positions, alphaInput,
    alphaConstant: alphaInput ? undefined : alpha.producer!,
    externals: new Set([clean, mask, positions, alphaInput].filter((v): v is Value => v !== undefined)),
  };
  templates.set(key, template);
  return template;
}

/** A chain in the model matched to a template. */
export interface ChainMatch {
  root: Node;
  /** The chain's nodes in emission order. */
  nodes: Node[];
  /** The site's value (written by the root) and the clean value the lookup or scale Mul writes now. */
  value: Value;
  clean: Value;
  site: Node;
  mask: Value | undefined;
  positions: Value | undefined;
  alphaInput: Value | undefined;
  /** The alpha Constant's value (float32), when alpha is not an input. */
  alpha: number | undefined;
  seed: number | undefined;
}

/** Ops whose first output a patch renames to the clean value: the lookups, or a scale Mul. */
const SITE_OPS = new Set(['Gather', 'GatherBlockQuantized', 'ATen', 'ATenOp', 'Mul']);

/**
 * Matches the chain ending at `root` against `template`: op types, domains, attributes and
 * wiring, walking back from the root. A string says why it does not have the template's shape.
 * A chain with the shape is returned with `problem` set when it is not exactly what the patch
 * leaves: names without the site's prefix, values read outside the chain, a clean value not
 * written by a lookup, inputs that are not graph inputs.
 */
export function matchChain(model: Model, template: ChainTemplate, root: Node): { chain: ChainMatch; problem: string | undefined } | string {
  const graph = root.graph!;
  const nodeMap = new Map<Node, Node>();
  const claimed = new Set<Node>();
  const valueMap = new Map<Value, Value>();
  let failure: string | undefined;
  const fail = (reason: string): false => { failure ??= reason; return false; };
  const pair = (t: Node, a: Node): boolean => {
    const known = nodeMap.get(t);
    if (known) return known === a || fail(`${a.describe()} is where the patch has ${known.describe()}`);
    if (claimed.has(a)) return fail(`${a.describe()} appears twice in the chain`);
    if (a.graph !== graph) return fail(`${a.describe()} is in another graph than ${root.describe()}`);
    if (a.opType !== t.opType || a.domain !== t.domain) return fail(`the patch has a ${t.opType} where the graph has ${a.describe()}`);
    if (a.inputs.length !== t.inputs.length || a.outputs.length !== 1 || !a.outputs[0]) {
      return fail(`${a.describe()} has ${a.inputs.length} input(s) and ${a.outputs.length} output(s); the patch's ${t.opType} has ${t.inputs.length} and 1`);
    }
    const attributeProblem = compareAttributes(t, a, template);
    if (attributeProblem) return fail(`${a.describe()}: ${attributeProblem}`);
    nodeMap.set(t, a);
    claimed.add(a);
    for (let i = 0; i < t.inputs.length; i++) {
      const tv = t.inputs[i]!, av = a.inputs[i];
      if (!av) return fail(`${a.describe()} has no input ${i}`);
      const bound = valueMap.get(tv);
      if (bound) {
        if (bound !== av) return fail(`${a.describe()} reads ${av.name} as input ${i} where the patch reads ${bound.name}`);
        continue;
      }
      valueMap.set(tv, av);
      if (template.externals.has(tv)) {
        // The mask, position ids and alpha input are graph inputs: nothing writes them.
        if (tv !== template.clean && av.producer && !av.producer.isRemoved) return fail(`${a.describe()} reads ${av.name}, written by ${av.producer.describe()}, where the patch reads a graph input`);
        continue;
      }
      const producer = av.producer;
      if (!producer || producer.isRemoved || av.producerIndex !== tv.producerIndex) {
        return fail(`${a.describe()} input ${i} (${av.name}) is not written by a ${tv.producer!.opType} of the patch`);
      }
      if (!pair(tv.producer!, producer)) return false;
    }
    return true;
  };
  if (!pair(template.root, root)) return failure!;
  if (nodeMap.size !== template.nodes.length) return `${root.describe()} heads only part of a patch chain`;
  const nodes = template.nodes.map((t) => nodeMap.get(t)!);
  const value = root.outputs[0]!;
  const clean = valueMap.get(template.clean)!;
  const alphaConstant = template.alphaConstant && nodeMap.get(template.alphaConstant);
  const uniform = nodes.find((n) => n.opType === 'RandomUniformLike')!;
  const chain: ChainMatch = {
    root, nodes, value, clean, site: clean.producer!,
    mask: template.mask && valueMap.get(template.mask), positions: template.positions && valueMap.get(template.positions),
    alphaInput: template.alphaInput && valueMap.get(template.alphaInput),
    alpha: alphaConstant ? scalarOf(alphaConstant.attribute('value')!) : undefined,
    seed: uniform.attribute('seed') ? uniform.attributeValue<number>('seed') : undefined,
  };
  return { chain, problem: chainProblem(model, chain, claimed) };
}

function chainProblem(model: Model, chain: ChainMatch, claimed: Set<Node>): string | undefined {
  const { root, nodes, value, clean } = chain;
  const graph = root.graph!;
  const prefix = chainPrefix(value.name);
  const unmarked = nodes.find((n) => !n.name?.startsWith(prefix));
  if (unmarked) return `${unmarked.describe()} in the chain is not named with the patch's prefix ${prefix}`;
  const site = clean.producer;
  if (!site || site.isRemoved || claimed.has(site) || site.graph !== graph || clean.producerIndex !== 0 || !SITE_OPS.has(site.opType)) {
    return `the clean value ${clean.name} is not the first output of a lookup or scale Mul in the chain's graph`;
  }
  if (!clean.name.startsWith(`${RESERVED_PREFIX}${value.name}__clean`)) return `the clean value ${clean.name} is not named as the patch names it`;
  for (const v of [clean, ...nodes.filter((n) => n !== root).map((n) => n.outputs[0]!)]) {
    if (v !== clean && !v.name.startsWith(prefix)) return `value ${v.name} in the chain is not named with the patch's prefix ${prefix}`;
    const reader = v.uses.find((u) => !claimed.has(u.node));
    if (reader) return `value ${v.name} is also read by ${reader.node.describe()}, outside the patch`;
    if (v.isGraphOutput) return `value ${v.name} is a graph output`;
  }
  for (const v of [chain.mask, chain.positions]) {
    if (v && findInput(graph, v.name) !== v) return `${v.name}, read by the chain, is not a graph input`;
  }
  const alpha = chain.alphaInput;
  if (alpha && !(alpha.graph === model.graph && alpha.isGraphInput)) return `the alpha value ${alpha.name} is not an input of the main graph`;
  return undefined;
}

/** Why node `a` does not carry the attributes the patch gives template node `t`, if it does not. */
function compareAttributes(t: Node, a: Node, template: ChainTemplate): string | undefined {
  const actual = new Map<string, Attribute>();
  for (const at of a.attributes) {
    if (actual.has(at.name)) return `attribute ${at.name} appears twice`;
    actual.set(at.name, at);
  }
  if (t === template.alphaConstant) {
    const v = actual.get('value');
    const alpha = v && actual.size === 1 ? scalarOf(v) : undefined;
    return alpha !== undefined && Number.isFinite(alpha) && alpha > 0 ? undefined : 'not a Constant holding a float scalar alpha > 0';
  }
  let expected = t.attributes.length;
  const seed = t.opType === 'RandomUniformLike' ? actual.get('seed') : undefined;
  if (seed) {
    const s = seed.kind === 'FLOAT' ? seed.value as number : NaN;
    if (!Number.isInteger(s) || Math.abs(s) > 2 ** 24) return 'seed is not an integer float';
    expected++;
  }
  if (actual.size !== expected) return `has attributes [${[...actual.keys()].join(', ')}], the patch's ${t.opType} has [${t.attributes.map((x) => x.name).join(', ')}]`;
  for (const ta of t.attributes) {
    const aa = actual.get(ta.name);
    if (!aa || !sameEncoding(ta, aa)) return `attribute ${ta.name} is not the one the patch writes`;
  }
  return undefined;
}

function sameEncoding(x: Attribute, y: Attribute): boolean {
  if (x.graphs.length || y.graphs.length) return false;
  try {
    const ex = AttributeProtoType.encode(x.proto as never).finish();
    const ey = AttributeProtoType.encode(y.proto as never).finish();
    return ex.length === ey.length && ex.every((b, i) => b === ey[i]);
  } catch {
    return false;
  }
}

/** The value of a TENSOR attribute holding a float32 scalar; undefined for anything else. */
function scalarOf(a: Attribute): number | undefined {
  try {
    const t = a.kind === 'TENSOR' ? a.value as Tensor | undefined : undefined;
    if (!t || t.dataType !== DataType.FLOAT || t.dims.length !== 0 || t.storage === 'external') return undefined;
    const values = t.toArray() as Float32Array;
    return values.length === 1 ? values[0] : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Chains shaped like a patch, from every prefix-named Add or Cast (the node a patch writes the
 * site's value with), each with the problem that keeps it from being exact, if any.
 */
export function findChains(model: Model, marked: Node[]): Array<{ chain: ChainMatch; problem: string | undefined }> {
  const opset = model.opsetVersion('');
  if (opset === undefined) return [];
  const found: Array<{ chain: ChainMatch; problem: string | undefined }> = [];
  for (const root of marked) {
    if (root.opType !== 'Add' && root.opType !== 'Cast') continue;
    // The forms differ in structure, so at most one should fit; an exact fit wins over an inexact one.
    let best: { chain: ChainMatch; problem: string | undefined } | undefined;
    for (const variant of VARIANTS) {
      for (const type of NOISE_TYPES) {
        for (const alphaForm of ['constant', 'input'] as const) {
          const result = matchChain(model, chainTemplate(opset, variant, type, alphaForm), root);
          if (!isString(result) && (!best || (best.problem !== undefined && result.problem === undefined))) best = result;
        }
      }
    }
    if (best) found.push(best);
  }
  return found;
}
