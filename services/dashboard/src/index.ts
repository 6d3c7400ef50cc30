export { buildApp, explainUnschedulable, type DashboardDeps, type Overview, type VnfView } from './app.js';
export { HTTP_STATUS } from './errors.js';
export { loadDashboardConfig, type DashboardConfig } from './main.js';
export { createMetrics } from './metrics.js';
