export * from './stats.js';
export * from './verify.js';
