/** Base class of every error this library throws on purpose. `code` is stable for programs. */
export class OnnxNeftuneError extends Error {
  readonly code: string;
  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
    this.name = new.target.name;
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
  constructor(message: string) {
    super('ONNX_MODEL', message);
  }
}

/** A graph edit would break the IR's invariants (e.g. removing a node whose outputs are still used). */
export class GraphEditError extends OnnxNeftuneError {
  constructor(message: string) {
    super('GRAPH_EDIT', message);
  }
}
