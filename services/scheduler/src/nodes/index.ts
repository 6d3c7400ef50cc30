export * from '../placement/node-record.js';
export * from './registry.js';
export * from './metrics.js';
