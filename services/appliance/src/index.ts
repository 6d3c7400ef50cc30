export { loadApplianceConfig, DEFAULT_PORTS, DEFAULT_NETWORKS, type ApplianceConfig } from './config.js';
export { Supervised, type ServiceSpec } from './supervisor.js';
