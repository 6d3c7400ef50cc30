export * from './lease.js';
