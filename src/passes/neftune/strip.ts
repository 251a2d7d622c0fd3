/**
 * Strip, the inverse of the patch: removes exactly what a patch added, recognised by structure and
 * record together, and restores the original bytes; refuses (changing nothing) when they disagree.
 */
import { DataType, parseDataType } from '../../graph/dtype.js';
import type { Model, Node, Value } from '../../graph/ir.js';
import { int64ToNumber } from '../../graph/proto.js';
import { PatchMismatchError } from '../errors.js';
import { DEFAULT_ALPHA_INPUT, type NeftuneMode } from './options.js';
import { PATCH_METADATA_KEY, RESERVED_PREFIX, fromBase64, isString, markedNodes, recordState, removeRecord, type PatchRecord } from './record.js';
import { addedOpsetVersion } from './chain.js';
import { VARIANTS, chainTemplate, findChains, matchChain, type ChainMatch } from './recognise.js';

export interface StripResult {
  model: Model;
  modified: boolean;
  message: string;
  removedNodes: number;
  restoredValues: string[];
}

/**
 * Removes everything a NEFTune patch added and gives each lookup its original output back, so the
 * model encodes to its pre-patch bytes. Only nodes recognised by structure are removed: each
 * recorded site must be the exact chain the patch emits, and every claim of the metadata record
 * (names, options, added graph inputs, added opset import) must hold in the graph. When the record
 * and the graph disagree, throws PatchMismatchError and changes nothing. Without a readable record
 * (lost, or malformed: see readPatchRecord), the sites are found by structure alone and stripped
 * only when every match is exact; the default-domain opset import is then kept. A model without a
 * patch (nodes merely named `neftune__...` do not make one) is left alone (modified: false).
 */
export function stripNeftune(model: Model): StripResult {
  const plan = planStrip(model);
  if (isString(plan)) return { model, modified: false, message: plan, removedNodes: 0, restoredValues: [] };
  let removed = 0;
  for (const chain of plan.chains) {
    for (const node of chain.nodes) { node.graph!.remove(node, { force: true }); removed++; }
  }
  for (const chain of plan.chains) {
    chain.site.replaceOutput(0, chain.value);
    // A node the patch found in a non-canonical encoding gets its own bytes back (when it still holds exactly that).
    const source = plan.sourceNodes.get(chain);
    if (source !== undefined) chain.site.adoptSourceBytes(fromBase64(source));
  }
  // The patch's alpha input: its readers (the chains) are gone, so removing it needs no force.
  for (const input of plan.inputs) model.graph.removeInput(input);
  if (plan.removeOpsetImport) {
    const list = model.proto.opset_import!;
    list.splice(list.findIndex(isDefaultDomainImport), 1);
    if (!list.length) delete model.proto.opset_import;
  }
  removeRecord(model, plan.record);
  return {
    model, modified: true, removedNodes: removed, restoredValues: plan.chains.map((c) => c.value.name),
    message: `Removed ${removed} node(s) and restored ${plan.chains.length} embedding output(s)${plan.note}.`,
  };
}

interface StripPlan {
  chains: ChainMatch[];
  inputs: Value[];
  removeOpsetImport: boolean;
  note: string;
  /** The record the plan follows (undefined when the patch was found by structure alone). */
  record?: PatchRecord;
  /** Recorded pre-patch bytes of site nodes (base64), by chain. */
  sourceNodes: Map<ChainMatch, string>;
}

const MISMATCH_ADVICE = 'Nothing was changed. If the model was edited after patching, strip the file saved by the patch, or patch the clean model again. '
  + `If only the record is wrong and the patch nodes are intact, delete the metadata entry "${PATCH_METADATA_KEY}": strip then recognises the patch from the graph alone.`;

function mismatch(reason: string): PatchMismatchError {
  return new PatchMismatchError(`Cannot strip the NEFTune patch: ${reason}. ${MISMATCH_ADVICE}`);
}

/** What strip will remove, checked in full before anything changes; a string means nothing to strip. */
function planStrip(model: Model): StripPlan | string {
  const state = recordState(model);
  if (state.kind === 'conflicting') {
    throw mismatch(`the model has ${state.count} metadata entries "${PATCH_METADATA_KEY}" with different contents, so which patch was applied is unknown`);
  }
  const marked = markedNodes(model);
  if (state.kind === 'valid') return planFromRecord(model, state.record, marked);
  // No usable record: find the sites by structure. Only exact chains are stripped.
  const found = findChains(model, marked);
  const unreadable = state.kind === 'malformed' ? ` (the metadata entry "${PATCH_METADATA_KEY}" is unreadable: ${state.reason}; left as is)` : '';
  if (!found.length) return `Nothing to strip: the model carries no NEFTune patch${unreadable}.`;
  const inexact = found.find((f) => isString(f.problem));
  if (inexact) throw mismatch(`${inexact.chain.root.describe()} heads a chain shaped like a NEFTune patch, but ${inexact.problem}`);
  const chains = found.map((f) => f.chain);
  const claimed = claimChains(chains);
  const unexplained = marked.filter((n) => !claimed.has(n));
  if (unexplained.length) {
    throw mismatch(`the patch record is ${state.kind === 'malformed' ? `unreadable (${state.reason})` : 'missing'} and ${describeNodes(unexplained)} named with the reserved prefix ${unexplained.length === 1 ? 'is' : 'are'} not part of any recognised site, so the patch cannot be told apart from the model's own nodes`);
  }
  const inputs = uniqueAlphaInputs(chains);
  for (const input of inputs) {
    const problem = addedInputProblem(model, input, claimed);
    if (problem) throw mismatch(problem);
  }
  return { chains, inputs, removeOpsetImport: false, sourceNodes: new Map(), note: ` (the metadata record was ${state.kind === 'malformed' ? `unreadable: ${state.reason}` : 'missing'}; found the patch by its structure)` };
}

function planFromRecord(model: Model, record: PatchRecord, marked: Node[]): StripPlan {
  const opset = model.opsetVersion('');
  if (opset === undefined) throw mismatch(`the record lists ${record.sites.length} site(s) but the model imports no default-domain opset, which every patch has`);
  const byName = new Map<string, Node[]>();
  for (const n of marked) byName.set(n.name!, [...(byName.get(n.name!) ?? []), n]);
  const opts = record.options;
  const alphaName = opts.alphaInput ? (isString(opts.alphaInput) ? opts.alphaInput : DEFAULT_ALPHA_INPUT) : undefined;
  const chains: ChainMatch[] = [];
  const sourceNodes = new Map<ChainMatch, string>();
  record.sites.forEach((site, i) => {
    const where = `site ${i + 1} of ${record.sites.length} ("${site.value}")`;
    const rootName = site.addedNodes.at(-1)!;
    const roots = byName.get(rootName) ?? [];
    if (roots.length !== 1) {
      throw mismatch(`${where}: the record's last added node "${rootName}" ${!rootName.startsWith(RESERVED_PREFIX) ? `is not named with the reserved prefix ${RESERVED_PREFIX}` : roots.length ? `is in the model ${roots.length} times` : 'is not in the model'}`);
    }
    const root = roots[0]!;
    if (root.outputs[0]?.name !== site.value) throw mismatch(`${where}: ${root.describe()} writes ${root.outputs[0]?.name ?? 'nothing'}, not ${site.value}`);
    const variant = VARIANTS.find((v) => v.mode === opts.mode && v.withMask === (site.maskInput !== null) && v.withPositions === (site.positionIdsInput !== null));
    if (!variant) throw mismatch(`${where}: mode ${opts.mode} with mask input ${site.maskInput} and position ids ${site.positionIdsInput} is not a form the patch emits`);
    const template = chainTemplate(opset, variant, parseDataType(site.dtype), alphaName === undefined ? 'constant' : 'input');
    const result = matchChain(model, template, root);
    if (isString(result)) throw mismatch(`${where}: ${result}`);
    if (isString(result.problem)) throw mismatch(`${where}: ${result.problem}`);
    const chain = result.chain;
    const names = chain.nodes.map((n) => n.name ?? '');
    const differs = names.findIndex((n, j) => n !== site.addedNodes[j]);
    if (names.length !== site.addedNodes.length || differs >= 0) {
      throw mismatch(`${where}: the record lists ${site.addedNodes.length} added node(s), the graph's chain has ${names.length}${differs >= 0 ? `; the record names "${site.addedNodes[differs]}" where the graph has "${names[differs]}"` : ''}`);
    }
    const claims: Array<[string, unknown, unknown]> = [
      ['clean value', site.clean, chain.clean.name],
      ['mask input', site.maskInput, chain.mask?.name ?? null],
      ['position ids input', site.positionIdsInput, chain.positions?.name ?? null],
      ['alpha input', alphaName ?? null, chain.alphaInput?.name ?? null],
      ['alpha', alphaName === undefined ? Math.fround(opts.alpha) : null, chain.alpha ?? null],
      ['seed', opts.seed === undefined ? null : Math.fround(opts.seed), chain.seed ?? null],
      ['noise after a scale Mul', site.afterScale, chain.site.opType === 'Mul'],
    ];
    for (const [what, recorded, actual] of claims) {
      if (recorded !== actual) throw mismatch(`${where}: the record says ${what} ${JSON.stringify(recorded)}, the graph has ${JSON.stringify(actual)}`);
    }
    chains.push(chain);
    if (site.sourceNode !== undefined) sourceNodes.set(chain, site.sourceNode);
  });
  const claimed = claimChains(chains);
  const userNodes = new Set(record.userNodes ?? []);
  const unexplained = marked.filter((n) => !claimed.has(n) && !userNodes.has(n.name!));
  if (unexplained.length) {
    throw mismatch(`${describeNodes(unexplained)} named with the reserved prefix ${unexplained.length === 1 ? 'is' : 'are'} in no recorded site (the record does not describe the whole patch)`);
  }
  const inputs = uniqueAlphaInputs(chains);
  const listed = record.added.graphInputs;
  if (listed.length !== inputs.length || inputs.some((v) => !listed.includes(v.name))) {
    throw mismatch(`the record lists added graph inputs [${listed.join(', ')}], but the patch's nodes read [${inputs.map((v) => v.name).join(', ')}]`);
  }
  for (const input of inputs) {
    const problem = addedInputProblem(model, input, claimed);
    if (problem) throw mismatch(problem);
  }
  if (record.added.opsetImport) {
    const problem = opsetImportProblem(model, claimed, opts.mode);
    if (problem) throw mismatch(problem);
  }
  return { chains, inputs, removeOpsetImport: record.added.opsetImport, note: '', record, sourceNodes };
}

/** The nodes of all chains, refusing chains that share a node. */
function claimChains(chains: ChainMatch[]): Set<Node> {
  const claimed = new Set<Node>();
  for (const chain of chains) {
    for (const n of chain.nodes) {
      if (claimed.has(n)) throw mismatch(`two sites share ${n.describe()}`);
      claimed.add(n);
    }
  }
  return claimed;
}

function uniqueAlphaInputs(chains: ChainMatch[]): Value[] {
  return [...new Set(chains.flatMap((c) => (c.alphaInput ? [c.alphaInput] : [])))];
}

function describeNodes(nodes: Node[]): string {
  const shown = nodes.slice(0, 5).map((n) => n.describe()).join(', ');
  return `${nodes.length} node(s) (${shown}${nodes.length > 5 ? ', ...' : ''})`;
}

/** Why `input` cannot be an alpha input the patch added (a main-graph float scalar only the patch reads), if it cannot. */
function addedInputProblem(model: Model, input: Value, claimed: Set<Node>): string | undefined {
  const what = `graph input ${input.name}`;
  if (model.graph.inputs.filter((v) => v.name === input.name).length !== 1) return `${what} is not declared exactly once`;
  if (input.initializer || input.sparseInitializer) return `${what} has an initializer, so the patch did not add it`;
  if (input.isGraphOutput) return `${what} is also a graph output`;
  if (input.elemType !== DataType.FLOAT || input.shape?.length !== 0) return `${what} is not a float scalar, so the patch did not add it`;
  const reader = input.uses.find((u) => !claimed.has(u.node));
  if (reader) return `${what} is also read by ${reader.node.describe()}, outside the patch`;
  return undefined;
}

const isDefaultDomainImport = (o: { domain?: string }): boolean => (o.domain ?? '') === '' || o.domain === 'ai.onnx';

/**
 * Why the record's claim that the patch added the default-domain opset import cannot be honoured,
 * if it cannot. Honoured when no node left after strip uses the default domain; or when the
 * import is exactly the one a patch adds (the last entry, at the version the patch picks for this
 * IR version and mode): a model of default-domain ops without the import (ONNX Runtime fills it
 * in) round-trips, while a false claim on a model that had its own import is refused.
 */
function opsetImportProblem(model: Model, removed: Set<Node>, mode: NeftuneMode): string | undefined {
  const list = model.proto.opset_import ?? [];
  const defaults = list.filter(isDefaultDomainImport);
  const claim = 'the record says the patch added the default-domain opset import';
  if (defaults.length !== 1 || (defaults[0]!.domain ?? '') !== '') return `${claim}, but the model has ${defaults.length} default-domain import(s)`;
  const version = int64ToNumber(defaults[0]!.version);
  const expected = addedOpsetVersion(model.irVersion, mode);
  // Checked first: the import a patch adds is honoured whoever uses it, so only a refusal (or a model without default-domain nodes) counts nodes, building every one.
  if (defaults[0] === list.at(-1) && version === expected) return undefined;
  let users = 0;
  let example: Node | undefined;
  for (const g of model.allGraphs()) {
    for (const n of g) if (!removed.has(n) && (n.domain === '' || n.domain === 'ai.onnx')) { users++; example ??= n; }
  }
  if (!users) return undefined;
  return `${claim} (ai.onnx ${version}), but ${users} node(s) left after strip use that domain (e.g. ${example!.describe()}) and it is not the import a patch adds (the last entry, version ${expected} for IR version ${model.irVersion})`;
}

