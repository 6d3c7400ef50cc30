export { buildApp, explainUnschedulable, type Overview } from './app.js';
