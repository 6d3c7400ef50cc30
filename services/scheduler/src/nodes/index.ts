export * from './record.js';
export * from './registry.js';
export * from './metrics.js';
