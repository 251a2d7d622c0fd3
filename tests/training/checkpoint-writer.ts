/**
 * Checkpoints for checkpoint.test.ts; run as a child process it saves checkpoints 1, 2, 3, ...
 * into argv[2] until killed.
 */
import { fileURLToPath } from 'node:url';
import { DataType, Tensor } from '../../src/graph/index.js';
import { CHECKPOINT_FORMAT, type TrainingCheckpoint } from '../../src/training/checkpoint.js';
import { saveCheckpoint } from '../../src/io/checkpoint-files.js';

/** A checkpoint whose every value is `step` (so a mixed or half-written one shows). */
export function uniformCheckpoint(step: number, elements = 1 << 16): TrainingCheckpoint {
  const tensor = (name: string, n: number) => Tensor.fromArray(DataType.FLOAT, [n], new Float32Array(n).fill(step), name);
  return {
    info: { format: CHECKPOINT_FORMAT, version: 1, step, seed: 1, schedule: { kind: 'constant', lr: 0.1 }, alpha: null, gradientAccumulation: 1, optimizer: 'sgd', hyperparameters: {}, params: ['big', 'small'], state: [], dataPosition: { step } },
    tensors: [tensor('big', elements), tensor('small', 4)],
  };
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const dir = process.argv[2]!;
  for (let step = 1; ; step++) {
    await saveCheckpoint(dir, uniformCheckpoint(step, 1 << 20));
    process.stdout.write(`${step}\n`);
  }
}
