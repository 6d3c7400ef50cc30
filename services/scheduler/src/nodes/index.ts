export * from './record.js';
export * from './registry.js';
