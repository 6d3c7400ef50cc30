export * from './launcher.js';
export * from './auth.js';
