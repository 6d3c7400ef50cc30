export * from './plan.js';
export * from './cpus.js';
export * from './eal.js';
export * from './vpp.js';
export * from './ovs.js';
