/**
 * Fine-tuned models on disk: the training copy of a model with its external data read in, and the
 * export's writer. A trained tensor stored externally goes into a copy of its data file (same
 * offsets, the other bytes as they were); the input's data file is only ever read. Data copies are
 * written first (atomically), then the model; if the model cannot be written, the copies made are removed.
 */
import { closeSync, readSync, unlinkSync, existsSync } from 'node:fs';
import path from 'node:path';
import type { Model } from '../graph/ir.js';
import { Tensor } from '../graph/tensor.js';
import type { ExportResult, ExternalWrite } from '../training/export.js';
import { writeError, writeFileAtomic } from './atomic-write.js';
import { ExternalDataError, RefusedError } from './errors.js';
import { openExternalDataFile, readExternalDataFile, type ExternalDataFile } from './external-data.js';
import { saveModelFile, sameFile, type LoadedModel, type SaveResult } from './files.js';

/**
 * A copy of `loaded.model` whose external initializers of the main graph hold their bytes (the
 * trainer feeds them and ORT gets one self-contained model). `loaded.model` is not changed.
 */
export function withExternalDataRead(loaded: LoadedModel): Model {
  const model = loaded.model.clone();
  const files = new Map(loaded.externalData.map((f) => [f.location, f]));
  const contents = new Map<string, Uint8Array>();
  for (const v of model.graph.initializers) {
    const t = v.initializer!;
    const ref = t.storage === 'external' ? t.external : undefined;
    if (!ref) continue;
    const file = files.get(ref.location);
    if (!file?.present) throw new ExternalDataError(`Initializer "${v.name}": its external data "${ref.location}" is missing; training needs every weight. Put the data file beside the model.`);
    let bytes = contents.get(ref.location);
    if (!bytes) contents.set(ref.location, bytes = readExternalDataFile(file));
    const length = ref.length ?? t.byteLength;
    const { external_data: _, data_location: __, ...rest } = t.proto;
    v.initializer = new Tensor({ ...rest, name: v.name, raw_data: bytes.slice(ref.offset, ref.offset + length) });
  }
  return model;
}

export interface FineTunedSaveResult extends SaveResult {
  /** Data files written with trained weights (copies of the input's, beside the output). */
  trainedData: string[];
}

/**
 * Writes the exported model to `dest` and, for its external-data tensors, a copy of each data file
 * beside it with the trained bytes. Beside the input (same folder) the copy cannot take the data
 * file's name, so it is named `<output file>.data` (`.N.data` for the Nth of several) and the
 * model's references say so; elsewhere it keeps its name. A file of that name already there is
 * replaced only when it is not one the input reads.
 */
export async function saveFineTuned(loaded: LoadedModel, exported: ExportResult, dest: string): Promise<FineTunedSaveResult> {
  const target = path.resolve(dest);
  const byLocation = new Map<string, ExternalWrite[]>();
  for (const w of exported.externalWrites) byLocation.set(w.location, [...(byLocation.get(w.location) ?? []), w]);
  const sameFolder = sameFile(loaded.dir, path.dirname(target));
  const renamed = new Map<string, string>();
  [...byLocation.keys()].forEach((location, i, all) => renamed.set(location, dataCopyName(sameFolder, target, location, i, all.length)));
  const model = exported.model;
  if (sameFolder) relocate(model, renamed);
  const reads = new Set(loaded.externalData.map((f) => path.resolve(f.path)));
  // The carried save checks only the data files it carries; the trained ones' originals must be safe too.
  if (reads.has(target) || loaded.externalData.some((f) => f.present && sameFile(f.path, target))) {
    throw new RefusedError(`Refusing to write ${target}: that is an external data file the input model reads its weights from. Choose another output name.`);
  }
  const written: string[] = [];
  try {
    for (const [location, writes] of byLocation) {
      const file = loaded.externalData.find((f) => f.location === location);
      if (!file?.present) throw new ExternalDataError(`Cannot export: the external data "${location}" of the trained weights is missing.`);
      const out = path.join(path.dirname(target), renamed.get(location)!);
      if (reads.has(path.resolve(out)) || (existsSync(out) && loaded.externalData.some((f) => f.present && sameFile(f.path, out)))) {
        throw new RefusedError(`Refusing to write the trained weights to ${out}: the input model reads its weights from that file. Choose another output name or folder.`);
      }
      await writeFileAtomic(out, patchedCopy(file, writes));
      written.push(out);
    }
    // The copies just written replace the input's files for the trained locations: only the others are carried.
    const carried: LoadedModel = { ...loaded, model, externalData: loaded.externalData.filter((f) => !byLocation.has(f.location)) };
    const saved = await saveModelFile(carried, target);
    return { ...saved, trainedData: written };
  } catch (error) {
    for (const file of written) { try { unlinkSync(file); } catch { /* already gone */ } }
    throw writeError(`write ${target}`, error);
  }
}

/** The name of the trained copy of data file `location`, the `index`th of `count` trained ones. */
function dataCopyName(sameFolder: boolean, target: string, location: string, index: number, count: number): string {
  return sameFolder ? `${path.basename(target)}${count > 1 ? `.${index + 1}` : ''}.data` : location;
}

/**
 * Every path saveFineTuned may write a trained data file to for `dest`, checked before training
 * (which of the model's data files hold trained tensors is known only after it).
 */
export function fineTunedDataPaths(loaded: LoadedModel, dest: string): string[] {
  const target = path.resolve(dest);
  const locations = [...new Set(loaded.externalData.map((f) => f.location))];
  if (!locations.length) return [];
  const sameFolder = sameFile(loaded.dir, path.dirname(target));
  const names = new Set(locations.map((location, i) => dataCopyName(sameFolder, target, location, i, locations.length)));
  if (sameFolder) names.add(dataCopyName(true, target, '', 0, 1));
  return [...names].map((name) => path.join(path.dirname(target), name));
}

/** Points every main-graph external reference at its new location. */
function relocate(model: Model, renamed: ReadonlyMap<string, string>): void {
  for (const v of model.graph.initializers) {
    const t = v.initializer!;
    const ref = t.storage === 'external' ? t.external : undefined;
    const to = ref && renamed.get(ref.location);
    if (!to) continue;
    const entries = (t.proto.external_data ?? []).map((e) => (e.key === 'location' ? { ...e, value: to } : e));
    v.initializer = new Tensor({ ...t.proto, external_data: entries });
  }
}

const CHUNK = 4 << 20;

/** The data file's bytes in chunks, with the written ranges replaced; read through the checked descriptor. */
function* patchedCopy(file: ExternalDataFile, writes: readonly ExternalWrite[]): Iterable<Uint8Array> {
  const fd = openExternalDataFile(file);
  try {
    const size = file.size!;
    for (const w of writes) {
      if (w.offset + w.bytes.length > size) throw new ExternalDataError(`Tensor ${w.tensor}: ${w.bytes.length} bytes at offset ${w.offset} do not fit in "${file.location}" (${size} bytes).`);
    }
    for (let start = 0; start < size; start += CHUNK) {
      // A fresh buffer per chunk: writeFileAtomic may still hold the previous one.
      const chunk = new Uint8Array(Math.min(CHUNK, size - start));
      for (let done = 0; done < chunk.length;) {
        const n = readSync(fd, chunk, done, chunk.length - done, start + done);
        if (n === 0) throw new ExternalDataError(`External data "${file.location}" became shorter while it was copied.`);
        done += n;
      }
      for (const w of writes) {
        const from = Math.max(w.offset, start), to = Math.min(w.offset + w.bytes.length, start + chunk.length);
        if (from < to) chunk.set(w.bytes.subarray(from - w.offset, to - w.offset), from - start);
      }
      yield chunk;
    }
  } finally {
    closeSync(fd);
  }
}
