/** The passes: embedding analysis, the pass contract and its option schemas, and NEFTune. */
export * from './errors.js';
export {
  findEmbeddings, describeCandidate, NOISE_MIN_OPSET,
  type EmbeddingCandidate, type EmbeddingReport, type EmbeddingRole, type IndicesInfo, type IndicesSource,
  type LookupKind, type NearMiss, type TableInfo, type TableStorage,
} from './embeddings.js';
export * from './pass.js';
export * from './schema.js';
export * from './neftune.js';
