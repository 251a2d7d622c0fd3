/** NEFTune's options: the one declaration (schema) and their normalised form. */
import { normalizeWithSchema, type OptionSchema, type OptionSpec } from '../schema.js';

export type NeftuneMode = 'hf' | 'mask' | 'packed';
export const MODES: readonly NeftuneMode[] = ['hf', 'mask', 'packed'];
export const DEFAULT_ALPHA_INPUT = 'neftune_alpha';
/** RandomUniformLike's seed is a float attribute: integers beyond 2^24 would not survive. */
export const MAX_SEED = 2 ** 24;

export interface NeftuneOptions {
  /** Noise scale (default 5); finite and > 0. */
  alpha?: number;
  /** How L is counted: `hf` (runtime size of the last two dims), `mask` (per row), `packed` (per segment). */
  mode?: NeftuneMode;
  /** `mask` / `packed`: the attention-mask input (default `attention_mask`; `decoder_attention_mask` for decoder ids). */
  maskInput?: string;
  /** `packed`: the position-ids input (default `position_ids`). */
  positionIdsInput?: string;
  /** Patch the lookups of these tables instead of the default token table. */
  tables?: string[];
  /** Patch these lookup nodes (by node name). */
  nodes?: string[];
  /** Patch every patchable candidate. */
  allCandidates?: boolean;
  /** Integer seed written as RandomUniformLike's seed: reproducible noise per session. */
  seed?: number;
  /** Read alpha from a required float scalar graph input (true: `neftune_alpha`) so training can anneal it. */
  alphaInput?: boolean | string;
  /** Add the noise after a scalar scale Mul that directly follows the lookup (Gemma's sqrt(d)). */
  afterScale?: boolean;
  /** Patch a model that is already patched: strip first, then patch. */
  repatch?: boolean;
}

/** The options as recorded in the patch: checked, alpha and mode filled in, nothing that is off or empty. */
export type NormalizedOptions = Required<Pick<NeftuneOptions, 'alpha' | 'mode'>> & Omit<NeftuneOptions, 'alpha' | 'mode' | 'repatch'>;

/** The order here is the order options are recorded in (and so part of the patched bytes). */
export const NEFTUNE_OPTIONS: OptionSchema<NeftuneOptions> = {
  alpha: {
    type: 'number', flag: 'alpha', placeholder: 'N', default: 5, description: 'Noise scale (finite, > 0; the paper uses 5, 10 or 15)',
    check: (a) => (Number.isFinite(a) && a > 0 ? undefined : 'be a finite number > 0 (the paper uses 5, 10 or 15)'),
  },
  mode: {
    type: 'choice', flag: 'mode', choices: MODES, default: 'hf',
    description: 'hf: L*d from the last two dims; mask: per-row L from the attention mask; packed: per-segment L from restarting position ids',
  },
  maskInput: {
    type: 'string', flag: 'mask-input', placeholder: 'NAME', defaultText: 'attention_mask',
    description: 'Attention-mask input for mask/packed modes (decoder_attention_mask for decoder ids)',
    check: (name) => (name ? undefined : 'not be empty'),
  },
  positionIdsInput: {
    type: 'string', flag: 'position-ids-input', placeholder: 'NAME', defaultText: 'position_ids',
    description: 'Position-ids input for packed mode', check: (name) => (name ? undefined : 'not be empty'),
  },
  tables: { type: 'strings', flag: 'table', placeholder: 'NAME', description: 'Patch the lookups of this table (repeatable)' },
  nodes: { type: 'strings', flag: 'node', placeholder: 'NAME', description: 'Patch this lookup node (repeatable)' },
  allCandidates: { type: 'boolean', flag: 'all-candidates', description: 'Patch every patchable lookup' },
  seed: {
    type: 'number', flag: 'seed', placeholder: 'N', description: 'RandomUniformLike seed (integer): reproducible noise per session within one ONNX Runtime build (its Node and web builds draw different sequences for the same seed)',
    check: (s) => (Number.isInteger(s) && Math.abs(s) <= MAX_SEED ? undefined : 'be an integer with |seed| <= 2^24 (it is stored as a float)'),
  },
  alphaInput: {
    type: 'boolean-or-string', flag: 'alpha-input', placeholder: '[NAME]', defaultName: DEFAULT_ALPHA_INPUT,
    description: `Read alpha from a float scalar graph input (named ${DEFAULT_ALPHA_INPUT} unless given) so training can anneal it`,
  },
  afterScale: { type: 'boolean', flag: 'after-scale', description: 'Add the noise after a scalar scale Mul that follows the lookup (Gemma)' },
  repatch: { type: 'boolean', flag: 'repatch', recorded: false, description: 'Strip an existing patch first, then patch' },
};

/** Validates and fills in defaults; throws PatchOptionError naming the option that is wrong. */
export function normalizeOptions(options: NeftuneOptions): NormalizedOptions {
  const normalized: Record<string, unknown> = normalizeWithSchema(NEFTUNE_OPTIONS, options);
  for (const [key, spec] of Object.entries(NEFTUNE_OPTIONS) as Array<[string, OptionSpec]>) if (spec.recorded === false) delete normalized[key];
  return normalized as NormalizedOptions;
}
