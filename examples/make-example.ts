/**
 * Writes the bundled example models (built with the project's own builder) into examples/models/:
 * a GPT-shaped inference model and a small training graph.
 * Usage: node dist/examples/make-example.js [folder]
 */
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { encodeModel } from '../src/graph/index.js';
import { writeFileAtomic } from '../src/io/index.js';
import { buildTinyGpt, buildTinyTrainingGraph } from './models.js';

const dir = path.resolve(process.argv[2] ?? 'examples/models');
mkdirSync(dir, { recursive: true });
const files = {
  'tiny-gpt.onnx': encodeModel(buildTinyGpt({ vocab: 256, dim: 32, exposeEmbeddings: true })),
  'tiny-training.onnx': encodeModel(buildTinyTrainingGraph()),
};
for (const [name, bytes] of Object.entries(files)) {
  await writeFileAtomic(path.join(dir, name), [bytes]);
  console.log(`wrote ${path.join(path.relative(process.cwd(), dir) || '.', name)} (${bytes.length} bytes)`);
}
