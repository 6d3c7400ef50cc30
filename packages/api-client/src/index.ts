export * from './client.js';
export * from './connect.js';
