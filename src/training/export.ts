/**
 * The fine-tuned forward model: the original forward model with its trained initializers replaced
 * (same names, dtype (float32 master weights go back to float16/bfloat16), shape and storage: raw bytes stay raw, typed fields stay typed, external
 * tensors keep their location and offset) and the NEFTune patch stripped. Nothing else is
 * re-encoded differently: nodes, opset imports and metadata come out as they were read.
 * Browser-safe: external payloads are returned as writes for the file layer to make.
 */
import { DataType, dataTypeName } from '../graph/dtype.js';
import type { Model } from '../graph/ir.js';
import { Tensor } from '../graph/tensor.js';
import { isPatched } from '../passes/neftune/recognise.js';
import { stripNeftune } from '../passes/neftune/strip.js';
import { TrainingOptionError } from './errors.js';

/** New bytes for a range of an external data file (the model's reference to it is unchanged). */
export interface ExternalWrite { tensor: string; location: string; offset: number; bytes: Uint8Array }

export interface ExportResult {
  model: Model;
  /** Trained tensors whose payload lives in external data: write each into a copy of its file. */
  externalWrites: ExternalWrite[];
  stripped: boolean;
}

/** `forward` is not changed; `parameters` are named as the forward model's initializers. */
export function exportFineTuned(forward: Model, parameters: readonly Tensor[]): ExportResult {
  const model = forward.clone();
  const stripped = isPatched(model);
  if (stripped) stripNeftune(model);
  const externalWrites: ExternalWrite[] = [];
  for (const trained of parameters) {
    const v = model.graph.initializer(trained.name ?? '');
    if (!v) throw new TrainingOptionError(`Cannot export: the forward model has no initializer "${trained.name}". Export into the model the training step was built from.`);
    const old = v.initializer!;
    const p = fromMasterWeight(trained, old.dataType);
    if (old.dataType !== p.dataType || old.dims.join(',') !== p.dims.join(',')) {
      throw new TrainingOptionError(`Cannot export ${p.name}: trained ${dataTypeName(p.dataType)} [${p.dims.join(', ')}], the forward model has ${dataTypeName(old.dataType)} [${old.dims.join(', ')}]. Export into the model the training step was built from.`);
    }
    const bytes = p.rawBytes();
    switch (old.storage) {
      case 'external': {
        const ref = old.external!;
        externalWrites.push({ tensor: p.name!, location: ref.location, offset: ref.offset, bytes });
        break;
      }
      case 'typed': {
        // Same field as before: re-encode through a raw tensor's typed view.
        const typed = new Tensor({ ...old.proto, raw_data: bytes });
        const proto = { ...old.proto };
        for (const field of ['float_data', 'double_data', 'int32_data', 'int64_data', 'uint64_data'] as const) {
          if (old.proto[field]?.length) (proto as Record<string, unknown>)[field] = typedField(typed, field);
        }
        v.initializer = new Tensor(proto);
        break;
      }
      default:
        v.initializer = new Tensor({ ...old.proto, raw_data: bytes });
    }
  }
  return { model, externalWrites, stripped };
}

/**
 * A float32 master weight (mixed precision, see TrainingStepRecord.params) in the model's float16 or
 * bfloat16, rounded to nearest even; any other tensor as it is.
 */
function fromMasterWeight(t: Tensor, modelType: DataType): Tensor {
  if (t.dataType !== DataType.FLOAT || (modelType !== DataType.FLOAT16 && modelType !== DataType.BFLOAT16)) return t;
  return Tensor.fromArray(modelType, t.dims, t.toArray() as Float32Array, t.name);
}

function typedField(t: Tensor, field: 'float_data' | 'double_data' | 'int32_data' | 'int64_data' | 'uint64_data'): unknown[] {
  const data = t.toArray();
  // float16/bfloat16 live in int32_data as their 16 bits; floats and doubles in their own fields.
  return Array.from(data as ArrayLike<number | bigint>, (x) => (field === 'int64_data' || field === 'uint64_data' ? x : Number(x)));
}
