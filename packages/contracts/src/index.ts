export * from './errors.js';
export * from './values.js';
export * from './vnfd.js';
export * from './node.js';
export * from './internal.js';
