#!/usr/bin/env node
/** The `neftune` command line. */
import { readFileSync } from 'node:fs';
import yargs from 'yargs';
import { hideBin } from 'yargs/helpers';
import { OnnxNeftuneError } from '../src/graph/errors.js';
import { exitCodeOf, inspectCommand, patchCommand, stripCommand, usageFailure, verifyCommand, type CliResult, type FileCommandOptions } from './commands.js';
import { describeErrno } from './errors.js';
import { EXIT, EXIT_CODE_HELP } from './exit-codes.js';
import { printHuman } from './report.js';
import { MAX_VERIFY_RUNS } from './verify-budget.js';
import { NEFTUNE_OPTIONS } from '../src/passes/neftune.js';
import { FILE_OPTIONS, cliMessage, optionsFromArgv, refuseRepeatedFlags, yargsOptions } from './flags.js';
import { STEP_OPTIONS } from './step-options.js';
import { trainOptions } from './train-options.js';

/** Set while a model is being written to stdout: its failure is reported as that file's failure. */
let modelWriteInFlight = false;

// A closed pipe (`neftune inspect m.onnx | head`) ends output quietly instead of with a stack trace;
// any other failure (ENOSPC, EIO, EBADF) is one line on stderr and exit 7.
process.stdout.on('error', (error: NodeJS.ErrnoException) => {
  if (error.code === 'EPIPE') process.exit(process.exitCode ?? 0);
  if (modelWriteInFlight) return;
  process.stderr.write(`error: cannot write to stdout: ${describeErrno(error)}\n`);
  process.exit(EXIT.WRITE_FAILED);
});
// Nowhere left to report a failing stderr; the exit code still tells.
process.stderr.on('error', () => undefined);

function emit(result: CliResult, json: boolean | undefined): void {
  if (json) process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
  else printHuman(result, (l) => process.stdout.write(`${l}\n`), (l) => process.stderr.write(`${l}\n`));
  process.exitCode = result.exitCode;
}

const writeStdout = (bytes: Uint8Array) => new Promise<void>((resolve, reject) => {
  modelWriteInFlight = true;
  process.stdout.write(bytes, (error) => {
    if (!error) { modelWriteInFlight = false; resolve(); return; }
    if ((error as NodeJS.ErrnoException).code === 'EPIPE') process.exit(process.exitCode ?? 0);
    reject(error);
  });
});

const fileOptions = yargsOptions(FILE_OPTIONS);
const jsonOption = { type: 'boolean', describe: FILE_OPTIONS.json.description } as const;

function checkStdoutJson(argv: Record<string, unknown>, command: string): CliResult | undefined {
  if (argv['output'] === '-' && argv['json']) return usageFailure(command, '--json cannot be combined with -o - (stdout carries the model)');
  return undefined;
}

function fileCommandOptions(argv: Record<string, unknown>): FileCommandOptions {
  const { output, inPlace, dryRun } = optionsFromArgv(FILE_OPTIONS, argv);
  return { ...(output !== undefined ? { output } : {}), inPlace: !!inPlace, dryRun: !!dryRun, writeStdout };
}

/**
 * The package's version, from its package.json (two folders up, in the bundle too): yargs would
 * look for a package.json above the working directory, or above the folder that installed us.
 */
const packageVersion = (): string =>
  (JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }).version;

/** yargs drops a bare '-' from positional lists; carry it through as a token and map it back. */
const STDIN_TOKEN = '\u0000stdin';
const rawArgs = hideBin(process.argv).map((arg, i, all) =>
  arg === '-' && all[i - 1] !== '-o' && all[i - 1] !== '--output' ? STDIN_TOKEN : arg);
const models = (list: string[]) => list.map((m) => (m === STDIN_TOKEN ? '-' : m));

// No top-level await: this module is also bundled as CommonJS (scripts/bundle.mjs).
void yargs(rawArgs)
  .scriptName('neftune')
  .usage('$0 <command> [options]\n\nAdd NEFTune noise to the token embeddings of ONNX training graphs, remove it again, and build training-step graphs.')
  .command('inspect <model>', 'Show embedding lookups, their roles, the default target, patch state and external data', (y) => y
    .positional('model', { type: 'string', describe: 'Model file, or - for stdin', demandOption: true })
    .option('json', jsonOption)
    .example('$0 inspect model.onnx', 'Readable report')
    .example('$0 inspect model.onnx --json | jq .files[0].model.embeddings', 'Machine-readable report'),
  async (argv) => emit(await inspectCommand(models([argv.model])[0]!), argv.json))
  .command('patch <models..>', 'Insert NEFTune noise after the token-embedding lookups', (y) => y
    .positional('models', { type: 'string', array: true, describe: 'Model files or folders (every .onnx inside); - for stdin', demandOption: true })
    .options(fileOptions)
    .options(yargsOptions(NEFTUNE_OPTIONS))
    .example('$0 patch model.onnx -o model.neftune.onnx', 'Default: token table, alpha 5, hf scaling')
    .example('$0 patch artifacts/ --in-place --alpha-input', 'Patch training_model.onnx of a training-artifacts folder; alpha fed at run time')
    .example('$0 patch bert.onnx -o out.onnx --mode mask --mask-input input_mask --seed 42', 'Per-example L from the mask, reproducible noise')
    .example('cat model.onnx | $0 patch - -o - > patched.onnx', 'Pipeline use'),
  async (argv) => {
    const bad = checkStdoutJson(argv, 'patch');
    if (bad) return emit(bad, false);
    const options = optionsFromArgv(NEFTUNE_OPTIONS, argv);
    emit(await patchCommand(models(argv.models as string[]), options, fileCommandOptions(argv)), !!argv['json']);
  })
  .command('strip <models..>', 'Remove a NEFTune patch exactly (the original bytes come back)', (y) => y
    .positional('models', { type: 'string', array: true, describe: 'Model files or folders; - for stdin', demandOption: true })
    .options(fileOptions)
    .example('$0 strip model.neftune.onnx -o model.onnx', 'Restore the unpatched model')
    .example('$0 strip exports/ -o clean/', 'Strip every model of a folder'),
  async (argv) => {
    const bad = checkStdoutJson(argv, 'strip');
    if (bad) return emit(bad, false);
    emit(await stripCommand(models(argv.models as string[]), fileCommandOptions(argv)), !!argv['json']);
  })
  .command('verify <model>', 'Run the patched model on ONNX Runtime and check the noise: bounds, mean and variance, fresh per run, zero padding, alpha 0, strip', (y) => y
    .positional('model', { type: 'string', describe: 'Patched model file', demandOption: true })
    .option('ep', { choices: ['cpu', 'cuda', 'wasm'] as const, array: true, default: ['cpu'] as Array<'cpu' | 'cuda' | 'wasm'>, describe: 'Execution provider (repeatable): cpu and cuda via onnxruntime-node, wasm via onnxruntime-web' })
    .option('batch', { type: 'number', default: 2, describe: 'Batch size of the made-up inputs (refused when the run would need over 1 GiB)' })
    .option('seq', { type: 'number', default: 16, describe: 'Sequence length of the made-up inputs (refused when the run would need over 1 GiB)' })
    .option('runs', { type: 'number', default: 3, describe: `Runs per check (1 to ${MAX_VERIFY_RUNS}; the freshness check needs 2)` })
    .option('json', jsonOption)
    .example('$0 verify model.neftune.onnx', 'Check on the CPU provider')
    .example('$0 verify model.neftune.onnx --ep cpu --ep wasm --json', 'Check on CPU and WebAssembly, machine-readable'),
  async (argv) => {
    for (const [flag, value] of [['batch', argv.batch], ['seq', argv.seq], ['runs', argv.runs]] as const) {
      if (!Number.isInteger(value) || value < 1) return emit(usageFailure('verify', `--${flag} must be a positive integer, got ${value}`), argv.json);
    }
    if (argv.runs > MAX_VERIFY_RUNS) return emit(usageFailure('verify', `--runs must be at most ${MAX_VERIFY_RUNS}, got ${argv.runs} (more runs add little to the checks; raise --batch or --seq for more samples)`), argv.json);
    emit(await verifyCommand(models([argv.model])[0]!, { eps: [...new Set(argv.ep)], batch: argv.batch, seq: argv.seq, runs: argv.runs }), argv.json);
  })
  .command('step <model>', 'Write the training-step graph of a forward model: forward, loss, backward and optimizer update in standard ONNX ops', (y) => y
    .positional('model', { type: 'string', describe: 'Forward model file, or - for stdin', demandOption: true })
    .options(yargsOptions(STEP_OPTIONS))
    .demandOption('output')
    .example('$0 step gpt2.onnx -o gpt2.step.onnx', 'Causal-LM loss from logits and input_ids, AdamW')
    .example('$0 step model.onnx -o step.onnx --loss output:loss --optimizer sgd --momentum 0.9 --params wte.weight', 'A loss output of the model; train one table')
    .example('$0 patch model.onnx -o m.neftune.onnx --alpha-input && $0 step m.neftune.onnx -o step.onnx', 'NEFTune fine-tuning: patch, then build the step'),
  async (argv) => {
    const bad = checkStdoutJson(argv, 'step');
    if (bad) return emit(bad, false);
    emit(await (await import('./step.js')).stepCommand(models([argv.model as string])[0]!, optionsFromArgv(STEP_OPTIONS, argv), { output: argv['output'] as string, writeStdout }), !!argv['json']);
  })
  .command('train <model>', 'Fine-tune a forward model with NEFTune on ONNX Runtime: checkpoints, loss log and plot, the fine-tuned model without noise', (y) => trainOptions(y)
    .example('$0 train model.onnx --data data.jsonl -o tuned.onnx --steps 200 --lr 3e-3', 'Token-id JSONL, NEFTune alpha 5, AdamW')
    .example('$0 train model.onnx --data alpaca.json --tokenizer tokenizer.json -o tuned.onnx --compare --plot loss.svg', 'Instruction data; with and without NEFTune in one plot'),
  async (argv) => (await import('./train.js')).trainCommand(models([argv.model as string])[0]!, argv as never))
  .example('$0 inspect model.onnx', 'What would be patched, and why')
  .example('$0 patch model.onnx -o model.neftune.onnx', 'Add noise to the token embedding (alpha 5)')
  .example('$0 strip model.neftune.onnx -o model.onnx', 'Remove it again, byte for byte')
  .example('$0 verify model.neftune.onnx --ep cpu --ep wasm', 'Prove on ONNX Runtime that the noise is right')
  .example('$0 step model.neftune.onnx -o step.onnx', 'Build the training-step graph (runs on any ONNX Runtime build)')
  // yargs passes itself as the second argument (not in its types): the options of the command being run.
  // Async: a rejection reaches the .catch below (a sync throw would escape parseAsync).
  .middleware((async (_argv: unknown, y: { getOptions(): never }) => refuseRepeatedFlags(rawArgs, y.getOptions())) as never)
  .demandCommand(1, 'Name a command: inspect, patch, strip, verify, step or train')
  .strict()
  .epilogue(EXIT_CODE_HELP)
  .fail((message, error) => {
    if (error) throw error;
    process.stderr.write(`error: ${message}\nRun neftune --help for usage.\n`);
    process.exit(EXIT.USAGE);
  })
  .help()
  .version(packageVersion())
  .wrap(Math.min(110, process.stdout.columns ?? 100))
  .parseAsync()
  .catch((error: unknown) => {
    if (error instanceof OnnxNeftuneError) {
      process.stderr.write(`error: ${cliMessage(error)}\n`);
      process.exitCode = exitCodeOf(error);
      return;
    }
    process.stderr.write(`internal error: ${(error as Error)?.stack ?? String(error)}\n`);
    process.exitCode = EXIT.INTERNAL;
  });
