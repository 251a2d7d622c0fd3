/**
 * Checkpoints on disk. Layout of a checkpoint directory:
 *   LATEST                       the name of the newest complete checkpoint (one line)
 *   step-00000040/checkpoint.onnx        tensors as initializers (large ones in checkpoint.onnx.data)
 *   step-00000040/checkpoint.json        the info (also in the model's metadata; both must agree)
 * The model's metadata also holds a SHA-256 of every tensor (name, type, shape, bytes), checked on
 * load: a flipped byte anywhere in the tensors is refused, as is a tensor holding NaN or infinity.
 * A save writes a hidden temp folder, flushes it, renames it to step-N, then replaces LATEST
 * atomically: a kill at any moment leaves LATEST naming a complete checkpoint (the new one or the
 * one before); a stray temp folder is removed by the next save.
 */
import { createHash } from 'node:crypto';
import { fsyncSync, openSync, closeSync, readdirSync, readFileSync, renameSync, rmSync, existsSync } from 'node:fs';
import path from 'node:path';
import { DataType } from '../graph/dtype.js';
import { Tensor } from '../graph/tensor.js';
import { checkpointFromModel, checkpointToModel, CheckpointFormatError, type TrainingCheckpoint } from '../training/checkpoint.js';
import { makeFolders, writeError, writeFileAtomic } from './atomic-write.js';
import { readModelFile, saveWithExternalData } from './files.js';
import { withExternalDataRead } from './finetuned-files.js';
import { lstatOrUndefined } from './fs-facts.js';
import { FileAccessError } from './errors.js';
import { errnoOf } from './fs-facts.js';

const POINTER = 'LATEST';
const MODEL = 'checkpoint.onnx';
const INFO = 'checkpoint.json';
// step-N, or step-N.K when step N was saved again (resumed at N): an existing folder is never replaced.
const NAME = /^step-\d{8,}(\.\d+)?$/;
const TEMP = /^\.step-\d{8,}\.\d+\.tmp$/;
const CHECKSUM_KEY = 'onnx_neftune.checkpoint_sha256';

/** SHA-256 over the tensors' names, types, shapes and bytes, in name order (payloads must be loaded). */
function tensorsDigest(tensors: readonly Tensor[]): string {
  const hash = createHash('sha256');
  for (const t of [...tensors].sort((a, b) => (a.name! < b.name! ? -1 : a.name! > b.name! ? 1 : 0))) {
    hash.update(`${t.name}\u0000${t.dataType}\u0000${t.dims.join('x')}\u0000${t.byteLength}\u0000`);
    hash.update(t.rawBytes());
  }
  return hash.digest('hex');
}

/** Index of the first NaN or infinite element of a float tensor (float32/64, float16, bfloat16), or -1 (also for other types). */
export function firstNonFinite(t: Tensor): number {
  const exponent = t.dataType === DataType.FLOAT16 ? 0x7c00 : t.dataType === DataType.BFLOAT16 ? 0x7f80 : undefined;
  if (exponent !== undefined) return (t.toArray() as Uint16Array).findIndex((bits) => (bits & exponent) === exponent);
  if (t.dataType !== DataType.FLOAT && t.dataType !== DataType.DOUBLE) return -1;
  return (t.toArray() as Float32Array | Float64Array).findIndex((v) => !Number.isFinite(v));
}

export interface SaveCheckpointOptions {
  /** Keep this many complete checkpoints (default 2; the newest is always kept). */
  keep?: number;
  /** Tensors of at least this many bytes go to external data (default 1 KiB). */
  threshold?: number;
  /** Test hook: runs after each stage ('written', 'renamed', 'pointed'). */
  afterStage?: (stage: 'written' | 'renamed' | 'pointed') => void;
}

export async function saveCheckpoint(dir: string, checkpoint: TrainingCheckpoint, options: SaveCheckpointOptions = {}): Promise<string> {
  const root = path.resolve(dir);
  const step = `step-${String(checkpoint.info.step).padStart(8, '0')}`;
  const temp = path.join(root, `.${step}.${process.pid}.tmp`);
  let name = step;
  try {
    makeFolders(root);
    for (const entry of readdirSync(root)) if (TEMP.test(entry)) rmSync(path.join(root, entry), { recursive: true, force: true });
    makeFolders(temp);
    const model = checkpointToModel(checkpoint);
    model.metadata.set(CHECKSUM_KEY, tensorsDigest(checkpoint.tensors));
    await saveWithExternalData(model, path.join(temp, MODEL), options.threshold !== undefined ? { threshold: options.threshold } : {});
    await writeFileAtomic(path.join(temp, INFO), [new TextEncoder().encode(`${JSON.stringify(checkpoint.info)}\n`)]);
    for (const file of readdirSync(temp)) flush(path.join(temp, file));
    flush(temp);
    options.afterStage?.('written');
    // LATEST may name step-N itself (a run resumed at N saving N again): removing it first would leave
    // LATEST naming nothing if killed before the rename, so the new copy takes the next free name.
    for (let k = 1; existsSync(path.join(root, name)); k++) name = `${step}.${k}`;
    const final = path.join(root, name);
    renameSync(temp, final);
    flush(root);
    options.afterStage?.('renamed');
    await writeFileAtomic(path.join(root, POINTER), [new TextEncoder().encode(`${name}\n`)]);
    flush(root);
    options.afterStage?.('pointed');
    const keep = Math.max(1, options.keep ?? 2);
    const order = (e: string) => e.slice('step-'.length).split('.').map(Number) as [number, number?];
    const complete = readdirSync(root).filter((e) => NAME.test(e))
      .sort((a, b) => { const [sa, ka = 0] = order(a), [sb, kb = 0] = order(b); return sa - sb || ka - kb; });
    for (const old of complete.slice(0, -keep)) if (old !== name) rmSync(path.join(root, old), { recursive: true, force: true });
    return final;
  } catch (error) {
    rmSync(temp, { recursive: true, force: true });
    throw writeError(`save the checkpoint in ${root}`, error);
  }
}

function flush(file: string): void {
  const fd = openSync(file, 'r');
  try { fsyncSync(fd); } finally { closeSync(fd); }
}

/** Loads the checkpoint LATEST names in `dir` (or `dir` itself when it is one checkpoint's folder). */
export function loadCheckpoint(dir: string): TrainingCheckpoint {
  const root = path.resolve(dir);
  let folder = root;
  if (!existsSync(path.join(root, MODEL))) {
    let pointer: string;
    try { pointer = readFileSync(path.join(root, POINTER), 'utf8').trim(); } catch (error) {
      throw new FileAccessError(`Cannot resume from ${root}: no ${POINTER} file and no ${MODEL} in it (${errnoOf(error)}). Name a checkpoint directory the trainer wrote.`, { cause: error });
    }
    if (!NAME.test(pointer)) throw new CheckpointFormatError(`${path.join(root, POINTER)} names "${pointer}", not a checkpoint folder (step-NNNNNNNN). It was edited or damaged.`);
    folder = path.join(root, pointer);
  }
  // The model and its data files go through the checked reads every model does (regular files only,
  // no symbolic link out of the folder, no FIFO that would hang): a checkpoint folder is input too.
  const info = path.join(folder, INFO);
  const infoStat = lstatOrUndefined(info);
  if (!infoStat?.isFile()) throw new CheckpointFormatError(`The checkpoint in ${folder} has no ${INFO} regular file${infoStat ? ` (it is ${infoStat.isSymbolicLink() ? 'a symbolic link' : 'not a regular file'})` : ''}. Resume from a checkpoint the trainer wrote.`);
  let infoText: string;
  try { infoText = readFileSync(info, 'utf8'); } catch (error) {
    throw new FileAccessError(`Cannot read the checkpoint in ${folder}: ${errnoOf(error)}. Resume from an earlier checkpoint.`, { cause: error });
  }
  const loaded = readModelFile(path.join(folder, MODEL), { deferThreshold: Infinity });
  let model;
  try {
    model = withExternalDataRead(loaded);
  } finally {
    loaded.close();
  }
  const checkpoint = checkpointFromModel(model, infoText);
  const recorded = model.metadata.get(CHECKSUM_KEY);
  if (recorded === undefined) throw new CheckpointFormatError(`The checkpoint in ${folder} has no checksum ("${CHECKSUM_KEY}"): it was written by an older version or another tool. Resume from a checkpoint this version wrote.`);
  if (tensorsDigest(checkpoint.tensors) !== recorded) throw new CheckpointFormatError(`The checkpoint in ${folder} is damaged: its tensors do not match the checksum recorded when it was saved (a changed byte in ${MODEL} or its data file). Resume from an earlier checkpoint.`);
  for (const t of checkpoint.tensors) {
    const at = firstNonFinite(t);
    if (at >= 0) throw new CheckpointFormatError(`The checkpoint in ${folder} holds a NaN or infinite value (tensor ${t.name}, element ${at}): the run that saved it had diverged. Resume from an earlier checkpoint, with a lower learning rate.`);
  }
  return checkpoint;
}
