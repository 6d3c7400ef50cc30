export { loadConfig, parseConfig, type NodeAgentConfig } from './config.js';
export { collectInventory, parseCpuList, formatCpuList } from './inventory.js';
export { buildApp, type App, type AppDeps } from './app.js';
export { NodeAgent } from './agent.js';
export { SandboxManager, type SandboxRecord, type ReplicaRecord } from './sandbox/manager.js';
export { QemuDriver } from './hypervisor/qemu.js';
export type { HypervisorDriver, VmSpec, VmDevice, VmHandle, Capabilities } from './hypervisor/types.js';
export { recheck } from './recheck.js';
