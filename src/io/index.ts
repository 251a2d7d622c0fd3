export * from './errors.js';
export * from './external-data.js';
export * from './files.js';
export * from './lazy-read.js';
export * from './stream-read.js';
