export * from './lease.js';
export * from './core.js';
