/** The page's words: option labels (from the schema's names) and what each error code means for someone using the page. */
import type { ErrorCode } from '../src/graph/errors.js';
import type { WorkerError } from './protocol.js';

/** `positionIdsInput` -> `Position ids input`. */
export function labelOf(option: string): string {
  const words = option.replace(/([A-Z])/g, ' $1').toLowerCase();
  return words.charAt(0).toUpperCase() + words.slice(1);
}

interface Words { what: string; todo: string }

/** Every code the library can raise, in the page's words (a code added to the union must be added here). */
const BY_CODE: Record<ErrorCode | 'UNEXPECTED', Words> = {
  USAGE: { what: 'These files cannot be opened together', todo: 'Drop or pick one .onnx model, together with its external-data files if it has any.' },
  BAD_OPTION: { what: 'An option does not fit', todo: 'Correct the option named above and patch again.' },
  EP_UNAVAILABLE: { what: 'ONNX Runtime cannot run in this browser', todo: 'Use a current Chromium, Firefox or Safari; the patched model can still be downloaded.' },
  NO_EMBEDDING: { what: 'No token-embedding lookup to patch', todo: 'Check the candidates table: a model without a token-embedding Gather (or with it fused) cannot get NEFTune noise.' },
  AMBIGUOUS_EMBEDDING: { what: 'More than one table could be the token table', todo: 'Choose the table under "Tables" or the lookup under "Nodes", or tick "All candidates", then patch again.' },
  ONNX_DECODE: { what: 'This file is not a readable ONNX model', todo: 'Check that you chose the .onnx file itself and that it was downloaded or exported completely; export or download it again.' },
  ONNX_MODEL: { what: 'The model breaks a rule of the ONNX format', todo: 'Export the model again; the details above say what is wrong and where.' },
  GRAPH_EDIT: { what: 'The graph could not be changed safely', todo: 'Nothing was written. Export the model again, or report the model if it loads in ONNX Runtime.' },
  EXTERNAL_DATA: { what: "The model's external data is missing or does not fit", todo: 'Drop or pick the .onnx file together with its data file(s), as they were exported.' },
  FILE_ACCESS: { what: 'A file could not be read', todo: 'Pick the file again; if it is on a removable or network drive, copy it to a local folder first.' },
  MODEL_TOO_LARGE: { what: 'The model is too large to handle here', todo: 'Save the model with its weights as external data and open the .onnx with its data file.' },
  ALREADY_PATCHED: { what: 'This model is already patched', todo: 'Strip it first with "Strip the patch", or tick "Repatch" to strip and patch again in one go.' },
  REFUSED: { what: 'The request was refused', todo: 'Read the details above; nothing was changed.' },
  PATCH_MISMATCH: { what: 'The patch in this model is not exactly what this tool writes', todo: 'Nothing was stripped, so nothing was lost. Use the model you patched from, if you still have it.' },
  VERIFY_FAILED: { what: 'The noise check failed', todo: 'The patched model does not behave as its patch says; do not train with it, and report the model.' },
  VERIFY_UNABLE: { what: 'The noise could not be checked', todo: 'The patched model can still be downloaded; the details above say what stopped the check.' },
  WRITE_FAILED: { what: 'The result could not be written', todo: 'Free some memory (close other tabs) and try again.' },
  TRAINING_DIVERGED: { what: 'Training diverged (the loss or the weights became NaN or infinite)', todo: 'Lower the learning rate and train again; nothing was exported.' },
  UNEXPECTED: { what: 'Something went wrong inside the page', todo: 'Reload the page and try again; if it happens again, report it with the model.' },
};

/** An error as three sentences: what was wrong, where (the library's message, options named by their labels), what to do. */
export function errorWords(error: WorkerError, file: string): { what: string; where: string; todo: string } {
  const words = BY_CODE[error.code] ?? BY_CODE.UNEXPECTED;
  const detail = error.parts.map((p) => (typeof p === 'string' ? p : `"${labelOf(p.option)}"`)).join('');
  return { what: `${words.what} (while ${error.step} ${file}).`, where: detail, todo: words.todo };
}

/** A Train tab error in words: a data problem names its line and says how to fix it. */
export function trainErrorWords(error: WorkerError, dataName: string): { what: string; where: string; todo: string } {
  const where = error.parts.map((p) => (typeof p === 'string' ? p : `"${labelOf(p.option)}"`)).join('');
  if (error.step === 'reading the training data' && error.code !== 'UNEXPECTED') {
    return {
      what: `The training data cannot be used (${dataName}${error.line ? `, line ${error.line}` : ''}).`, where,
      todo: `${error.line ? `Correct line ${error.line} of ${dataName}` : `Correct ${dataName}`}: each line is one JSON object like {"input_ids": [1, 5, 6, 7, 2]} with token ids from 0 to 63, or choose the bundled tiny data.`,
    };
  }
  return errorWords(error, dataName);
}
