/**
 * The `neftune train` flags, apart from the command itself (cli/train.ts), so the CLI can declare
 * them without loading the training code: main.ts imports train.ts only when train runs.
 */
import type { Argv } from 'yargs';
import type { ExecutionProvider } from '../src/runtime/node.js';

export const DEFAULT_MAX_LEN = 512;

export interface TrainFlags {
  data: string;
  output: string;
  tokenizer?: string | undefined;
  steps?: number | undefined;
  epochs?: number | undefined;
  batch?: number | undefined;
  gradAccum?: number | undefined;
  maxLen?: number | undefined;
  lr?: number | undefined;
  schedule?: Schedule | undefined;
  warmup?: number | undefined;
  optimizer?: Optimizer | undefined;
  loss?: string | undefined;
  alpha?: number | undefined;
  neftune?: boolean | undefined;
  alphaSchedule?: string | undefined;
  mode?: Mode | undefined;
  seed?: number | undefined;
  ep: ExecutionProvider;
  checkpointDir?: string | undefined;
  checkpointEvery?: number | undefined;
  resume?: string | undefined;
  log?: string | undefined;
  plot?: string | undefined;
  evalData?: string | undefined;
  evalEvery?: number | undefined;
  compare: boolean;
  json: boolean;
}

export type Schedule = 'constant' | 'linear' | 'cosine';
export type Optimizer = 'sgd' | 'adamw';
export type Mode = 'hf' | 'mask' | 'packed';

export const DEFAULTS = { lr: 1e-3, schedule: 'constant' as Schedule, warmup: 0, alpha: 5, seed: 0, gradAccum: 1, batch: 8, mode: 'hf' as Mode, optimizer: 'adamw' as Optimizer };

export function trainOptions(y: Argv): Argv<TrainFlags> {
  return y
    .positional('model', { type: 'string', describe: 'Forward model file (logits output; token-embedding lookup for NEFTune)', demandOption: true })
    .option('data', { type: 'string', demandOption: true, describe: 'Training data: token-id JSONL ({"input_ids": [...], "labels"?: [...]}), or Alpaca JSON / JSONL with --tokenizer' })
    .option('output', { alias: 'o', type: 'string', demandOption: true, describe: 'The fine-tuned forward model (NEFTune stripped, trained weights)' })
    .option('tokenizer', { type: 'string', describe: 'Hugging Face tokenizer.json: --data is Alpaca instruction data (prompt tokens masked out of the loss)' })
    .option('steps', { type: 'number', describe: 'Optimizer updates to run (default: one epoch)' })
    .option('epochs', { type: 'number', describe: 'Epochs to run (instead of --steps)' })
    .option('batch', { type: 'number', describe: `Rows per micro-batch (default ${DEFAULTS.batch})` })
    .option('grad-accum', { type: 'number', describe: `Micro-batches per update (default ${DEFAULTS.gradAccum})` })
    .option('max-len', { type: 'number', describe: `Longest row in tokens (longer rows are cut; packed rows are filled up to it). Default ${DEFAULT_MAX_LEN}, or the model's limit when smaller (its position-embedding rows or fixed sequence length; a longer --max-len is refused)` })
    .option('lr', { type: 'number', describe: `Peak learning rate (default ${DEFAULTS.lr})` })
    .option('schedule', { choices: ['constant', 'linear', 'cosine'] as const, describe: 'Learning-rate schedule (default constant)' })
    .option('warmup', { type: 'number', describe: 'Updates of linear warm-up (default 0)' })
    .option('optimizer', { choices: ['sgd', 'adamw'] as const, describe: 'Update built into the step graph (default adamw)' })
    .option('loss', { type: 'string', describe: 'Loss of the step graph, as for neftune step: causal-lm, causal-lm:NAME (labels input NAME), labels:NAME, output:NAME (default: causal-lm, with labels when the data has them)' })
    .option('alpha', { type: 'number', describe: `NEFTune alpha (default ${DEFAULTS.alpha})` })
    .option('neftune', { type: 'boolean', describe: 'Add NEFTune noise (default; --no-neftune: plain fine-tuning)' })
    .option('alpha-schedule', { type: 'string', describe: 'constant, linear (alpha x (1 - update/steps) as --schedule linear decays the learning rate: the last update runs at alpha/steps, 0 is reached after it) or off-after:N (default constant)' })
    .option('mode', { choices: ['hf', 'mask', 'packed'] as const, describe: 'NEFTune scaling (default hf); packed also packs rows and draws noise per segment' })
    .option('seed', { type: 'number', describe: 'Seed of the data order and the NEFTune noise (default 0)' })
    .option('ep', { choices: ['cpu', 'wasm', 'cuda'] as const, default: 'cpu' as const, describe: 'cpu / cuda: onnxruntime-node; wasm: onnxruntime-web' })
    .option('checkpoint-dir', { type: 'string', describe: 'Write checkpoints here (at the end, and every --checkpoint-every updates)' })
    .option('checkpoint-every', { type: 'number', describe: 'Updates between checkpoints' })
    .option('resume', { type: 'string', describe: 'Continue from this checkpoint directory: same model and data; every run setting is taken from the checkpoint (flags given again must agree)' })
    .option('log', { type: 'string', describe: 'Write the per-step losses as CSV, a line per update as training goes (with --resume: the earlier updates too)' })
    .option('plot', { type: 'string', describe: 'Write the loss curves as SVG' })
    .option('eval-data', { type: 'string', describe: 'Evaluation data (same format as --data): eval loss in the log and plot' })
    .option('eval-every', { type: 'number', describe: 'Updates between eval losses (default: 20 per run)' })
    .option('compare', { type: 'boolean', default: false, describe: 'Train twice from the same seed, with and without NEFTune; both curves in --plot' })
    .option('json', { type: 'boolean', default: false, describe: 'One JSON object per step on stdout (JSON lines), then a summary object' }) as unknown as Argv<TrainFlags>;
}

