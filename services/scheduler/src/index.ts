export { buildApp, newId, type SchedulerApp, type SchedulerDeps } from './app.js';
export { loadConfig, type SchedulerConfig } from './config.js';
export { Store, JsonBucket } from './state/store.js';
export { OperationsEngine, allocIdOf } from './ops/engine.js';
export type { PlacementPort, PlaceReplicaInput } from './ops/placement-port.js';
