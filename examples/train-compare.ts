/**
 * Regenerates docs/images/neftune-compare.svg: the builder's tiny causal LM fine-tuned on the
 * bundled token data with `neftune train --compare` (with and without NEFTune, same seed), both
 * loss curves (train and eval) in one plot.
 * Usage: npm run build && node dist/examples/train-compare.js [out.svg]
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { encodeModel } from '../src/graph/index.js';
import { buildTinyGpt } from './models.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const out = path.resolve(process.argv[2] ?? path.join(root, 'docs', 'images', 'neftune-compare.svg'));
const work = mkdtempSync(path.join(tmpdir(), 'neftune-compare-'));
try {
  const model = path.join(work, 'tiny-gpt.onnx');
  writeFileSync(model, encodeModel(buildTinyGpt({ vocab: 64 })));
  const data = path.join(root, 'examples', 'data', 'tiny-tokens.jsonl');
  const args = [path.join(root, 'dist', 'cli', 'bin.cjs'), 'train', model, '--data', data, '--eval-data', data, '-o', path.join(work, 'tuned.onnx'),
    '--steps', '300', '--batch', '8', '--max-len', '32', '--lr', '0.01', '--schedule', 'cosine', '--warmup', '10', '--alpha', '5', '--seed', '0',
    '--compare', '--plot', out];
  const r = spawnSync(process.execPath, args, { stdio: 'inherit' });
  if (r.status !== 0) process.exitCode = r.status ?? 1;
  else console.log(`wrote ${out}`);
} finally {
  rmSync(work, { recursive: true, force: true });
}
