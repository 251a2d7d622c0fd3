import { test } from 'node:test';
import assert from 'node:assert/strict';
import { closeSync, ftruncateSync, mkdirSync, openSync, realpathSync, statSync, symlinkSync, writeFileSync, writeSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { ModelBuilder, Tensor, decodeModel, encodeModel } from '../src/graph/index.js';
import { ExternalDataError, checkExternalData, sameContent } from '../src/io/index.js';
import { runCliJson, tempDir } from './cli-helpers.js';

const root = tempDir('io-copy');
const MiB = 2 ** 20;

/**
 * dir/model.onnx whose token table (1024 x 1024 float, 4 MiB of random bytes) sits at 512 MiB in
 * dir/model.onnx.data, a sparse file of 1 GiB: everything else is a hole.
 */
function sparseModel(dir: string): { file: string; data: string } {
  mkdirSync(dir, { recursive: true });
  const file = path.join(dir, 'model.onnx');
  const data = `${file}.data`;
  const b = new ModelBuilder({ opset: 17, irVersion: 8 });
  const table = b.initializer('wte', Tensor.external('float', [1024, 1024], { location: 'model.onnx.data', offset: 512 * MiB, length: 4 * MiB }));
  b.output(b.op('Gather', [table, b.input('input_ids', 'int64', ['batch', 'sequence'])], { axis: 0 }, { name: 'lookup' }), 'float', ['batch', 'sequence', 1024]);
  writeFileSync(file, encodeModel(b.build()));
  const fd = openSync(data, 'w');
  try {
    ftruncateSync(fd, 1024 * MiB);
    writeSync(fd, randomBytes(4 * MiB), 0, 4 * MiB, 512 * MiB);
  } finally { closeSync(fd); }
  return { file, data };
}

test('patch into another folder: a sparse data file (1 GiB, 4 MiB allocated) stays sparse, same bytes, bytes copied reported', { timeout: 120_000 }, () => {
  const { file, data } = sparseModel(path.join(root, 'src'));
  const source = statSync(data);
  assert.ok(source.blocks * 512 <= 8 * MiB, `the test file system keeps holes (${source.blocks * 512} bytes allocated)`);
  const out = path.join(root, 'other', 'model.onnx');
  const r = runCliJson(['patch', file, '-o', out]);
  assert.equal(r.code, 0, r.stdout);
  const copy = statSync(path.join(root, 'other', 'model.onnx.data'));
  assert.equal(copy.size, source.size);
  assert.ok(copy.blocks <= source.blocks, `the copy takes ${copy.blocks * 512} bytes on disk, the source ${source.blocks * 512}`);
  assert.ok(sameContent(data, path.join(root, 'other', 'model.onnx.data')));
  const result = r.json.files[0];
  assert.deepEqual(result.dataCopied, { files: 1, bytes: 1024 * MiB, allocated: copy.blocks * 512 });
  assert.match(result.message, /copied 1 external data file: 1073741824 bytes, \d+ on disk/);
});

/** A model in `dir` with one 64-byte external initializer per location (files not written). */
function modelReading(dir: string, locations: string[]) {
  mkdirSync(dir, { recursive: true });
  const b = new ModelBuilder({ opset: 17, irVersion: 8 });
  let x = b.input('x', 'float', [16]);
  for (const [i, location] of locations.entries()) x = b.op('Add', [x, b.initializer(`w${i}`, Tensor.external('float', [16], { location, offset: 0, length: 64 }))]);
  b.output(x, 'float', [16]);
  return decodeModel(encodeModel(b.build()));
}

test('the one-lstat check of data files in subfolders: a linked subfolder is resolved, and refused when it leads outside', () => {
  const dir = path.join(root, 'sub-check');
  const outside = path.join(root, 'elsewhere');
  for (const d of [path.join(dir, 'real'), path.join(dir, 'inner'), outside]) mkdirSync(d, { recursive: true });
  for (const f of [path.join(dir, 'real', 'a.bin'), path.join(dir, 'inner', 'b.bin'), path.join(outside, 'c.bin')]) writeFileSync(f, new Uint8Array(64));
  symlinkSync(path.join(dir, 'inner'), path.join(dir, 'linked-inside'));
  symlinkSync(outside, path.join(dir, 'linked-outside'));
  const folder = realpathSync(dir);

  const files = checkExternalData(modelReading(dir, ['real/a.bin', 'linked-inside/b.bin']), dir);
  assert.deepEqual(files.map((f) => [f.location, f.realPath, f.size]), [
    ['real/a.bin', path.join(folder, 'real', 'a.bin'), 64],
    ['linked-inside/b.bin', path.join(folder, 'inner', 'b.bin'), 64],
  ]);
  assert.throws(() => checkExternalData(modelReading(dir, ['real/a.bin', 'linked-outside/c.bin']), dir),
    (e: unknown) => e instanceof ExternalDataError && /"linked-outside\/c\.bin" resolves to .*elsewhere.*, outside the model's folder/.test(e.message));
});
