/**
 * The patch record: one metadata_props entry naming the tool, the options and everything a patch
 * added. Read field by field (a malformed record counts as absent, never throws) and written once.
 */
import { DataType, dataTypeName } from '../../graph/dtype.js';
import type { Model, Node } from '../../graph/ir.js';
import { optionProblem, type OptionSpec } from '../schema.js';
import { NEFTUNE_OPTIONS, type NormalizedOptions } from './options.js';

export const TOOL_VERSION = '0.1.0';
/** Every node and value the pass adds is named with this prefix. */
export const RESERVED_PREFIX = 'neftune__';
/** The model metadata_props key that records a patch. */
export const PATCH_METADATA_KEY = 'onnx_neftune.patch';

export interface PatchedSite {
  graphPath: string[];
  lookup: string;
  table: string;
  role: string;
  /** The value readers see (now noisy), and the fresh name the clean embedding got. */
  value: string;
  clean: string;
  /** Element type the noise is added in (ONNX DataType name). */
  dtype: string;
  afterScale: boolean;
  /** Inputs the mask / packed scaling reads (null in hf mode, or when packed rows have no mask). */
  maskInput: string | null;
  positionIdsInput: string | null;
  addedNodes: string[];
  /**
   * The site node's bytes before the patch (base64), kept only when the node was not encoded as
   * this library would encode it (field order, invalid UTF-8): strip gives them back.
   */
  sourceNode?: string;
}

export interface PatchRecord {
  tool: string;
  version: string;
  options: NormalizedOptions;
  sites: PatchedSite[];
  added: { graphInputs: string[]; opsetImport: boolean };
  /** Nodes already named with the reserved prefix before the patch (the user's own; strip leaves them). */
  userNodes?: string[];
  /** The text of an unreadable entry under the record's key that the patch replaced (null: it had no value): strip puts it back. */
  replacedEntry?: string | null;
}

/**
 * The recorded patch, if the metadata entry is present and every field strip and verify use is
 * there with the right type. Never throws. Fields added after a record was written are filled in
 * from the model (a site's element type from its value or table); a record that cannot be
 * completed, is not JSON (including a record too deep or too large to parse), or has a field of
 * the wrong type counts as absent: strip then finds the patch by structure alone, which only ever
 * removes exact chains, so a damaged record can cost the byte-exact opset restore but never a node
 * of the model. Several entries with the key count as one record when identical, and as absent
 * here when they differ (strip refuses those: which patch was applied is unknown). The returned
 * object is built from the validated fields only.
 */
export function readPatchRecord(model: Model): PatchRecord | undefined {
  const state = recordState(model);
  return state.kind === 'valid' ? state.record : undefined;
}

export type RecordState =
  | { kind: 'absent' }
  | { kind: 'valid'; record: PatchRecord }
  | { kind: 'malformed'; reason: string }
  | { kind: 'conflicting'; count: number };

export function recordState(model: Model): RecordState {
  const texts = model.metadata.entries.filter((e) => e.key === PATCH_METADATA_KEY).map((e) => e.value);
  if (!texts.length) return { kind: 'absent' };
  if (texts.some((t) => t !== texts[0])) return { kind: 'conflicting', count: texts.length };
  try {
    const parsed = parseRecord(texts[0]!, model);
    return typeof parsed === 'string' ? { kind: 'malformed', reason: parsed } : { kind: 'valid', record: parsed };
  } catch (error) {
    // Parsing is written not to throw; this keeps readers total even so.
    return { kind: 'malformed', reason: String((error as Error)?.message ?? error).slice(0, 200) };
  }
}

type Json = Record<string, unknown>;
const isObject = (x: unknown): x is Json => typeof x === 'object' && x !== null && !Array.isArray(x);
export const isString = (x: unknown): x is string => typeof x === 'string';
const isBoolean = (x: unknown): x is boolean => typeof x === 'boolean';
export const isStringArray = (x: unknown): x is string[] => Array.isArray(x) && x.every(isString);
export const NOISE_TYPES = [DataType.FLOAT, DataType.FLOAT16, DataType.BFLOAT16, DataType.DOUBLE];
const NOISE_TYPE_NAMES = NOISE_TYPES.map(dataTypeName);

/** The validated record, or why it is unusable. */
function parseRecord(text: string, model: Model): PatchRecord | string {
  let raw: unknown;
  try { raw = JSON.parse(text); } catch (error) { return `not JSON (${(error as Error).message.slice(0, 100)})`; }
  if (!isObject(raw)) return `not a JSON object (${Array.isArray(raw) ? 'an array' : raw === null ? 'null' : typeof raw})`;
  if (!isString(raw['tool']) || !isString(raw['version'])) return 'tool or version is missing or not a string';
  const options = parseOptions(raw['options']);
  if (isString(options)) return options;
  const rawSites = raw['sites'];
  if (!Array.isArray(rawSites) || !rawSites.length) return 'sites is not a non-empty array';
  const sites: PatchedSite[] = [];
  for (let i = 0; i < rawSites.length; i++) {
    const site = parseSite(rawSites[i], model);
    if (isString(site)) return `sites[${i}]: ${site}`;
    sites.push(site);
  }
  const added = raw['added'];
  if (!isObject(added) || !isStringArray(added['graphInputs']) || !isBoolean(added['opsetImport'])) {
    return 'added is not { graphInputs: string[], opsetImport: boolean }';
  }
  const record: PatchRecord = {
    tool: raw['tool'], version: raw['version'], options, sites, added: { graphInputs: [...added['graphInputs']], opsetImport: added['opsetImport'] },
  };
  const userNodes = raw['userNodes'];
  if (userNodes !== undefined) {
    if (!isStringArray(userNodes)) return 'userNodes is not an array of strings';
    record.userNodes = [...userNodes];
  }
  const replacedEntry = raw['replacedEntry'];
  if (replacedEntry !== undefined) {
    if (!isString(replacedEntry) && replacedEntry !== null) return 'replacedEntry is not a string or null';
    record.replacedEntry = replacedEntry;
  }
  return record;
}

/** The recorded options, checked against the option schema (options not recorded are refused). */
function parseOptions(raw: unknown): NormalizedOptions | string {
  if (!isObject(raw)) return 'options is not an object';
  const options: Json = {};
  for (const [key, spec] of Object.entries(NEFTUNE_OPTIONS) as Array<[string, OptionSpec]>) {
    const value = raw[key];
    if (value === undefined || spec.recorded === false) {
      if (key === 'alpha' || key === 'mode') return `options.${key} is missing`;
      continue;
    }
    const problem = optionProblem(spec, value);
    if (problem !== undefined) return `options.${key} does not ${problem}`;
    options[key] = Array.isArray(value) ? [...value] : value;
  }
  return options as NormalizedOptions;
}

function parseSite(raw: unknown, model: Model): PatchedSite | string {
  if (!isObject(raw)) return 'not an object';
  if (!isStringArray(raw['graphPath']) || !raw['graphPath'].length) return 'graphPath is not a non-empty array of strings';
  const names = ['lookup', 'table', 'role', 'value', 'clean'] as const;
  const missing = names.find((k) => !isString(raw[k]));
  if (missing) return `${missing} is missing or not a string`;
  const [lookup, table, role, value, clean] = names.map((k) => raw[k] as string) as [string, string, string, string, string];
  if (!isStringArray(raw['addedNodes']) || !raw['addedNodes'].length) return 'addedNodes is not a non-empty array of strings';
  const dtype = raw['dtype'] ?? recordedSiteType(model, value, table);
  if (!NOISE_TYPE_NAMES.includes(dtype as string)) return `dtype is not one of ${NOISE_TYPE_NAMES.join(', ')}`;
  const afterScale = raw['afterScale'] ?? false;
  if (!isBoolean(afterScale)) return 'afterScale is not a boolean';
  const maskInput = raw['maskInput'] ?? null, positionIdsInput = raw['positionIdsInput'] ?? null;
  if (maskInput !== null && !isString(maskInput)) return 'maskInput is not a string or null';
  if (positionIdsInput !== null && !isString(positionIdsInput)) return 'positionIdsInput is not a string or null';
  const sourceNode = raw['sourceNode'];
  if (sourceNode !== undefined && !(isString(sourceNode) && BASE64.test(sourceNode))) return 'sourceNode is not base64 text';
  return {
    graphPath: [...raw['graphPath']], lookup, table, role, value, clean, dtype: dtype as string, afterScale,
    maskInput, positionIdsInput, addedNodes: [...raw['addedNodes']], ...(sourceNode !== undefined ? { sourceNode } : {}),
  };
}

function recordedSiteType(model: Model, value: string, table: string): string | undefined {
  for (const g of model.allGraphs()) {
    const type = g.value(value)?.elemType ?? g.value(table)?.initializer?.dataType ?? g.value(table)?.elemType;
    if (type !== undefined) return dataTypeName(type);
  }
  return undefined;
}

export function markedNodes(model: Model): Node[] {
  const found: Node[] = [];
  // A loop, not push(...list): spreading a patch's many nodes as arguments can overflow the stack.
  for (const g of model.allGraphs()) for (const n of g.findNodes({ namePrefix: RESERVED_PREFIX })) found.push(n);
  return found;
}


/**
 * Writes `record` as the model's one patch entry. A single unreadable entry under the key (a
 * damaged record whose patch is gone) is replaced in place and its text kept in the record, so
 * strip gives it back where it was; several copies are replaced by one.
 */
export function writeRecord(model: Model, record: PatchRecord): void {
  const copies = model.metadata.entries.filter((e) => e.key === PATCH_METADATA_KEY).length;
  if (copies === 1 && recordState(model).kind === 'malformed') {
    const entry = recordEntry(model)!;
    // null: the entry had no value field at all (not even an empty one).
    record.replacedEntry = Object.hasOwn(entry, 'value') ? entry.value ?? '' : null;
  } else {
    while (model.metadata.delete(PATCH_METADATA_KEY));
  }
  model.metadata.set(PATCH_METADATA_KEY, JSON.stringify(record));
}

/** Removes the patch entry, or gives back the entry the patch replaced, in its place and form. */
export function removeRecord(model: Model, record: PatchRecord | undefined): void {
  const replaced = record?.replacedEntry;
  const entry = replaced !== undefined ? recordEntry(model) : undefined;
  if (!entry) {
    while (model.metadata.delete(PATCH_METADATA_KEY));
    return;
  }
  if (replaced === null) delete entry.value;
  else entry.value = replaced;
}

function recordEntry(model: Model): { key?: string; value?: string } | undefined {
  return model.proto.metadata_props?.find((e) => e.key === PATCH_METADATA_KEY);
}

const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/;

/** Base64 of bytes, browser-safe (no Buffer). */
export function toBase64(bytes: Uint8Array): string {
  let text = '';
  for (let i = 0; i < bytes.length; i += 0x8000) text += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(text);
}

export function fromBase64(text: string): Uint8Array {
  const raw = atob(text);
  const bytes = new Uint8Array(raw.length);
  for (let i = 0; i < raw.length; i++) bytes[i] = raw.charCodeAt(i);
  return bytes;
}
