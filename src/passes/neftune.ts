/**
 * NEFTune: adds U(-1, 1) * alpha / sqrt(L * d) to the output of each token-embedding lookup, and
 * removes exactly that again. The lookup writes a fresh name and the noise Add writes the original
 * value, so every reader (forward, backward, subgraph captures, graph outputs) sees the noisy
 * embedding and nothing else in the graph changes.
 *
 * The pass lives in ./neftune/, one file per part: options (schema), record (the metadata entry),
 * targets (which lookups), sites (planning against the model), chain (what is emitted, per mode),
 * recognise (finding emitted chains again), strip (the inverse) and apply (the GraphPass).
 */
export { DEFAULT_ALPHA_INPUT, NEFTUNE_OPTIONS, normalizeOptions, type NeftuneMode, type NeftuneOptions, type NormalizedOptions } from './neftune/options.js';
export { PATCH_METADATA_KEY, RESERVED_PREFIX, TOOL_VERSION, readPatchRecord, type PatchRecord, type PatchedSite } from './neftune/record.js';
export { selectTargets } from './neftune/targets.js';
export { isPatched } from './neftune/recognise.js';
export { stripNeftune, type StripResult } from './neftune/strip.js';
export { applyNeftune, checkNeftune, looksLikeTrainingGraph, neftunePass, type NeftunePassOptions, type PatchResult } from './neftune/apply.js';
