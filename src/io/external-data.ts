/**
 * The external-data security model, enforced in one place. A TensorProto with data_location =
 * EXTERNAL names a file relative to the model's folder. Before any such file is opened, each
 * reference must pass every check below (each one fixed a path-traversal CVE in onnx or ORT):
 *   1. only the keys location, offset, length, checksum;
 *   2. location not empty, not absolute, no `..` segment after normalising;
 *   3. the real path (symlinks resolved) stays inside the model's real folder;
 *   4. the file has exactly one hard link;
 *   5. offset + length lies within the file.
 * A missing file is not an error here (inspect, patch and strip need no payloads); it is reported.
 */
import { lstatSync, realpathSync, statSync } from 'node:fs';
import path from 'node:path';
import type { Model } from '../graph/ir.js';
import { Tensor } from '../graph/tensor.js';
import { OnnxModelError } from '../graph/errors.js';
import { ExternalDataError } from './errors.js';

const KNOWN_KEYS = new Set(['location', 'offset', 'length', 'checksum']);

export interface ExternalDataFile {
  /** The location as written in the model (relative, POSIX separators). */
  location: string;
  /** Absolute path on this machine. */
  path: string;
  present: boolean;
  size: number | undefined;
  /** Tensors that reference the file. */
  tensors: string[];
}

/** Every tensor of the model stored externally (initializers and tensor attributes, all graphs). */
export function externalTensors(model: Model): Tensor[] {
  const found: Tensor[] = [];
  for (const graph of model.allGraphs()) {
    for (const v of graph.initializers) if (v.initializer?.storage === 'external') found.push(v.initializer);
    for (const v of graph.sparseInitializers) {
      for (const t of [v.sparseInitializer?.values, v.sparseInitializer?.indices]) if (t && t.data_location === 1) found.push(new Tensor(t));
    }
    for (const node of graph) {
      for (const a of node.attributes) {
        const p = a.proto;
        for (const t of [p.t, ...(p.tensors ?? [])]) if (t && t.data_location === 1) found.push(new Tensor(t));
      }
    }
  }
  return found;
}

/** Checks every external reference of `model` (loaded from `modelDir`); returns the files, present or not. */
export function checkExternalData(model: Model, modelDir: string): ExternalDataFile[] {
  const files = new Map<string, ExternalDataFile>();
  let realDir: string;
  try { realDir = realpathSync(modelDir); } catch { realDir = path.resolve(modelDir); }
  for (const tensor of externalTensors(model)) {
    const name = tensor.name ?? '(unnamed tensor)';
    const ref = (() => {
      try { return tensor.external!; } catch (e) { throw new ExternalDataError((e as OnnxModelError).message); }
    })();
    for (const { key } of ref.entries) {
      if (!KNOWN_KEYS.has(key)) throw new ExternalDataError(`Tensor "${name}": unknown external_data key "${key}" (allowed: location, offset, length, checksum). The model may have been tampered with; re-export it.`);
    }
    const location = ref.location;
    if (!location) throw new ExternalDataError(`Tensor "${name}": external_data location is empty. Re-export the model with its data file.`);
    if (path.isAbsolute(location) || path.win32.isAbsolute(location) || location.startsWith('/') || location.startsWith('\\')) {
      throw new ExternalDataError(`Tensor "${name}": external_data location "${location}" is absolute; only paths relative to the model's folder are allowed.`);
    }
    const normalized = path.posix.normalize(location.replace(/\\/g, '/'));
    if (normalized.split('/').includes('..')) {
      throw new ExternalDataError(`Tensor "${name}": external_data location "${location}" leaves the model's folder ("..").`);
    }
    const full = path.join(modelDir, normalized);
    let entry = files.get(normalized);
    if (!entry) {
      entry = { location: normalized, path: full, present: false, size: undefined, tensors: [] };
      let link;
      try { link = lstatSync(full); } catch { link = undefined; }
      if (link) {
        let real: string;
        try { real = realpathSync(full); } catch { throw new ExternalDataError(`Tensor "${name}": external data "${location}" is a broken link.`); }
        if (real !== realDir && !real.startsWith(realDir + path.sep)) {
          throw new ExternalDataError(`Tensor "${name}": external data "${location}" resolves to ${real}, outside the model's folder ${realDir}.`);
        }
        const st = statSync(real);
        if (!st.isFile()) throw new ExternalDataError(`Tensor "${name}": external data "${location}" is not a regular file.`);
        if (st.nlink > 1) {
          throw new ExternalDataError(`Tensor "${name}": external data "${location}" has ${st.nlink} hard links; loaders reject multiply-linked data files. Copy it to a file of its own.`);
        }
        entry.present = true;
        entry.size = st.size;
      }
      files.set(normalized, entry);
    }
    entry.tensors.push(name);
    if (entry.present) {
      const end = ref.offset + (ref.length ?? 0);
      if (ref.offset > entry.size! || end > entry.size!) {
        throw new ExternalDataError(`Tensor "${name}": external data "${location}" offset ${ref.offset} + length ${ref.length ?? 0} = ${end} is beyond the file's ${entry.size} bytes. The data file is truncated or belongs to another model.`);
      }
    }
  }
  return [...files.values()];
}
