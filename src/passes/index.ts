export * from './errors.js';
export * from './embeddings.js';
export * from './pass.js';
export * from './schema.js';
export * from './neftune.js';
export { Emitter } from './emit.js';
