export * from './client.js';
export * from './connect.js';
export * from './dashboard-token.js';
