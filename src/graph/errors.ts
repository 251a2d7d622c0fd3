/**
 * Every `code` an OnnxNeftuneError carries: stable, for programs. The CLI maps each one to an exit
 * code in an exhaustive table (cli/exit-codes.ts), so a code added here without a mapping does not compile.
 */
export type ErrorCode =
  | 'USAGE' | 'BAD_OPTION' | 'EP_UNAVAILABLE'
  | 'NO_EMBEDDING' | 'AMBIGUOUS_EMBEDDING'
  | 'ONNX_DECODE' | 'ONNX_MODEL' | 'GRAPH_EDIT' | 'EXTERNAL_DATA' | 'FILE_ACCESS' | 'MODEL_TOO_LARGE'
  | 'ALREADY_PATCHED' | 'REFUSED' | 'PATCH_MISMATCH'
  | 'VERIFY_FAILED' | 'VERIFY_UNABLE'
  | 'WRITE_FAILED'
  | 'TRAINING_DIVERGED';

/**
 * An option named inside an error message. The library prints its name (`tables`); a command line
 * prints its own spelling of it (`--table`) through `OnnxNeftuneError.describe`.
 */
export class OptionMention {
  constructor(readonly option: string) {}
  toString(): string { return this.option; }
}

/** Mentions option `name` in an `errorMessage` template. */
export const optionName = (name: string): OptionMention => new OptionMention(name);

/** A message whose option mentions can be spelled differently by each front end. */
export class ErrorMessage {
  constructor(readonly parts: readonly (string | OptionMention)[]) {}
  render(spell: (option: string) => string = (o) => o): string {
    return this.parts.map((p) => (typeof p === 'string' ? p : spell(p.option))).join('');
  }
  toString(): string { return this.render(); }
}

/** Tagged template: `errorMessage\`choose with ${optionName('tables')}\``; nested messages keep their mentions. */
export function errorMessage(strings: TemplateStringsArray, ...values: unknown[]): ErrorMessage {
  const parts: (string | OptionMention)[] = [];
  strings.forEach((text, i) => {
    parts.push(text);
    if (i >= values.length) return;
    const value = values[i];
    if (value instanceof OptionMention) parts.push(value);
    else if (value instanceof ErrorMessage) parts.push(...value.parts);
    else parts.push(String(value));
  });
  return new ErrorMessage(parts);
}

/** Base class of every error this library throws on purpose. `code` is stable for programs. */
export class OnnxNeftuneError extends Error {
  readonly code: ErrorCode;
  /** The message with its option mentions kept apart (see `describe`). */
  readonly text: ErrorMessage;
  constructor(code: ErrorCode, text: string | ErrorMessage, options?: { cause?: unknown }) {
    const structured = typeof text === 'string' ? new ErrorMessage([text]) : text;
    super(structured.render(), options);
    this.code = code;
    this.text = structured;
    this.name = new.target.name;
  }

  /** The message with each mentioned option spelled by `spell` (a CLI passes its flag names). */
  describe(spell: (option: string) => string): string {
    return this.text.render(spell);
  }
}

/** The bytes are not a well-formed ONNX model: truncated, corrupted, or another format. */
export class OnnxDecodeError extends OnnxNeftuneError {
  /** Field path where decoding failed, e.g. `ModelProto.graph.node[3].attribute[0]`. */
  readonly path: string;
  /** Byte offset in the input where the problem was found. */
  readonly offset: number | undefined;
  constructor(reason: string, path: string, offset: number | undefined) {
    const where = offset === undefined ? `at ${path}` : `at ${path} (byte offset ${offset})`;
    super('ONNX_DECODE', `Not a valid ONNX model: ${reason} ${where}. ` +
      'The file may be truncated or corrupted, or not an ONNX model; re-export or re-download it.');
    this.path = path;
    this.offset = offset;
  }
}

/** The model is decodable but breaks a rule this library relies on (e.g. a graph input without a name). */
export class OnnxModelError extends OnnxNeftuneError {
  constructor(message: string | ErrorMessage) {
    super('ONNX_MODEL', message);
  }
}

/** A graph edit would break the IR's invariants (e.g. removing a node whose outputs are still used). */
export class GraphEditError extends OnnxNeftuneError {
  constructor(message: string) {
    super('GRAPH_EDIT', message);
  }
}
