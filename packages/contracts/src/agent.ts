/**
 * Guest agent protocol vocabulary shared by the node agent (gRPC client) and the guest agent (gRPC server).
 * The wire contract is `proto/agent.proto` (one source for both sides); the message shapes below are what
 * @grpc/proto-loader produces from it with AGENT_PROTO_LOADER_OPTIONS (camelCase fields, longs as numbers,
 * enums as strings, defaults filled in).
 * This module imports only node builtins, so the guest agent bundle may import it directly
 * (`@edgenfv/contracts/internal/agent`).
 */
import { fileURLToPath } from 'node:url';
import type { ErrorCode } from './errors.js';

export const AGENT_PROTOCOL_MAJOR = 1;
export const AGENT_PROTOCOL_MINOR = 1;
/** Fully qualified service name in agent.proto. */
export const AGENT_SERVICE = 'edgenfv.agent.v1.AgentService';
/** virtio-serial port name the guest agent looks for (`/sys/class/virtio-ports/<p>/name`). */
export const AGENT_PORT_NAME = 'edgenfv.agent.0';
/**
 * Where the guest image puts its reseed helper (deploy/guest-image/reseed.c): the guest agent runs it for
 * Reidentify after a snapshot restore (entropy into the kernel RNG, CRNG reseed, wall clock).
 */
export const GUEST_RESEED_HELPER = '/opt/edgenfv/bin/edgenfv-reseed';

/**
 * Absolute path of agent.proto: `$EDGENFV_AGENT_PROTO` when set (the guest image sets it, the bundle has no
 * package tree around it), else the file shipped in this package (`<contracts>/proto/agent.proto`).
 */
export function agentProtoPath(env: NodeJS.ProcessEnv = process.env): string {
  const fromEnv = env.EDGENFV_AGENT_PROTO;
  if (fromEnv) return fromEnv;
  return fileURLToPath(new URL('../../proto/agent.proto', import.meta.url));
}

/** Options for @grpc/proto-loader's loadSync: both sides must use exactly these. */
export const AGENT_PROTO_LOADER_OPTIONS = Object.freeze({
  keepCase: false,
  longs: Number,
  enums: String,
  bytes: Buffer,
  defaults: true,
  arrays: true,
  objects: false,
  oneofs: true,
});

/** Major versions must match; a newer minor on either side is fine (fields are added, never changed). */
export function isCompatibleProtocol(peerMajor: number, _peerMinor: number): boolean {
  return peerMajor === AGENT_PROTOCOL_MAJOR;
}

// ---- messages (as loaded with AGENT_PROTO_LOADER_OPTIONS)
export interface HealthResponse {
  status: 'UNKNOWN' | 'SERVING' | 'NOT_SERVING';
  agentVersion: string;
  protocolMajor: number;
  protocolMinor: number;
  uptimeSeconds: number;
  /** Random per agent process: changes when the agent restarted. */
  instanceId: string;
}
export interface VersionRequest {
  hostVersion: string;
  protocolMajor: number;
  protocolMinor: number;
}
export interface VersionResponse {
  agentVersion: string;
  protocolMajor: number;
  protocolMinor: number;
  kernelRelease: string;
  features: string[];
}
export interface NicInfo {
  name: string;
  mac: string;
  pciAddress: string;
  mtu: number;
  operState: string;
  addresses: string[];
  driver: string;
}
export interface GuestDetails {
  kernelRelease: string;
  memoryTotalBytes: number;
  cpus: number;
  nics: NicInfo[];
  agentVersion: string;
}
export interface InterfaceSpec {
  mac?: string;
  pciAddress?: string;
  /** `<slot>.<fn>/<slot>.<fn>` from the root bus (hex), e.g. `10.0/00.0`: see agent.proto. */
  pciPath?: string;
  name?: string;
  mtu?: number;
  addresses?: string[];
  down?: boolean;
}
export interface UpdateInterfacesRequest {
  interfaces: InterfaceSpec[];
  hotplugTimeoutMs?: number;
}
export interface UpdateInterfacesResponse {
  interfaces: NicInfo[];
}
export interface RouteSpec {
  dst: string;
  gateway?: string;
  device?: string;
  source?: string;
  metric?: number;
}
export interface UpdateRoutesRequest {
  routes: RouteSpec[];
}
export interface UpdateRoutesResponse {
  routes: RouteSpec[];
}
export interface ArpNeighbor {
  ip: string;
  mac: string;
  device: string;
}
export interface AddArpNeighborsRequest {
  neighbors: ArpNeighbor[];
}
export interface SetSysctlsRequest {
  sysctls: Record<string, string>;
}
export interface CreateContainerRequest {
  id: string;
  image: string;
  command?: string[];
  env?: string[];
  cwd?: string;
  hostNetwork?: boolean;
  memoryLimitMib?: number;
  /** The container gets what PrepareDataplane prepared (device nodes, hugepages); deleting it releases them. */
  dataplane?: boolean;
}
export interface ContainerRef {
  id: string;
}
export type ContainerState = 'UNKNOWN' | 'CREATED' | 'RUNNING' | 'STOPPED';
export interface ContainerStatus {
  id: string;
  state: ContainerState;
  pid: number;
  exitCode: number;
  image: string;
  startedAtMs: number;
  finishedAtMs: number;
}
export const CONTAINER_SIGNALS = ['SIGTERM', 'SIGKILL', 'SIGHUP', 'SIGINT', 'SIGUSR1', 'SIGUSR2'] as const;
export interface SignalContainerRequest {
  id: string;
  signal: string;
}
export interface DeleteContainerRequest {
  id: string;
  force?: boolean;
}
export interface ListContainersResponse {
  containers: ContainerStatus[];
}
export interface ReadLogsRequest {
  id: string;
  follow?: boolean;
  tailLines?: number;
}
export interface LogChunk {
  stream: 'stdout' | 'stderr';
  data: Buffer;
}
export interface ExecProcessRequest {
  id: string;
  argv: string[];
  timeoutMs?: number;
}
export interface ExecProcessResponse {
  exitCode: number;
  stdout: Buffer;
  stderr: Buffer;
}
export interface NicCounters {
  name: string;
  rxBytes: number;
  txBytes: number;
  rxPackets: number;
  txPackets: number;
  rxDropped: number;
  txDropped: number;
  rxErrors: number;
  txErrors: number;
}
export interface GuestMetrics {
  cpuUserMs: number;
  cpuSystemMs: number;
  cpuIdleMs: number;
  memoryTotalBytes: number;
  memoryAvailableBytes: number;
  agentRssBytes: number;
  nics: NicCounters[];
  containersRunning: number;
  agentRssAnonBytes: number;
}
export interface DataplaneNic {
  pciAddress: string;
  driver: 'vfio-pci' | 'uio_pci_generic' | (string & {});
}
export interface ConfigFile {
  path: string;
  content: string;
}
export interface PrepareDataplaneRequest {
  nics: DataplaneNic[];
  hugepageSizeKib?: number;
  hugepages?: number;
  files?: ConfigFile[];
  /** vfio-pci on a NIC the guest has no IOMMU for: the node's operator allows vfio's no-IOMMU mode (default no). */
  allowNoIommu?: boolean;
}
export interface PrepareDataplaneResponse {
  bound: DataplaneNic[];
  hugepageMount: string;
}

export interface ShutdownRequest {
  graceMs?: number;
  powerOff?: boolean;
}

/** After a snapshot restore (agent.proto Reidentify): the host's entropy and wall clock. */
export interface ReidentifyRequest {
  entropy: Buffer;
  unixTimeMs: number;
}
export interface ReidentifyResponse {
  instanceId: string;
  previousInstanceId: string;
}

// ---- gRPC status codes <-> AppError codes (numbers from grpc's status.h; no grpc import here)
export const GRPC_STATUS = {
  OK: 0,
  CANCELLED: 1,
  UNKNOWN: 2,
  INVALID_ARGUMENT: 3,
  DEADLINE_EXCEEDED: 4,
  NOT_FOUND: 5,
  ALREADY_EXISTS: 6,
  PERMISSION_DENIED: 7,
  RESOURCE_EXHAUSTED: 8,
  FAILED_PRECONDITION: 9,
  ABORTED: 10,
  OUT_OF_RANGE: 11,
  UNIMPLEMENTED: 12,
  INTERNAL: 13,
  UNAVAILABLE: 14,
  DATA_LOSS: 15,
  UNAUTHENTICATED: 16,
} as const;

const CODE_TO_GRPC: Record<ErrorCode, number> = {
  INVALID_ARGUMENT: GRPC_STATUS.INVALID_ARGUMENT,
  NOT_FOUND: GRPC_STATUS.NOT_FOUND,
  ALREADY_EXISTS: GRPC_STATUS.ALREADY_EXISTS,
  CONFLICT: GRPC_STATUS.FAILED_PRECONDITION,
  QUOTA_EXCEEDED: GRPC_STATUS.RESOURCE_EXHAUSTED,
  UNSCHEDULABLE: GRPC_STATUS.RESOURCE_EXHAUSTED,
  UNAVAILABLE: GRPC_STATUS.UNAVAILABLE,
  PERMISSION_DENIED: GRPC_STATUS.PERMISSION_DENIED,
  INTERNAL: GRPC_STATUS.INTERNAL,
};
export function errorCodeToGrpcStatus(code: ErrorCode): number {
  return CODE_TO_GRPC[code];
}
export function grpcStatusToErrorCode(status: number): ErrorCode {
  switch (status) {
    case GRPC_STATUS.INVALID_ARGUMENT:
    case GRPC_STATUS.OUT_OF_RANGE:
      return 'INVALID_ARGUMENT';
    case GRPC_STATUS.NOT_FOUND:
      return 'NOT_FOUND';
    case GRPC_STATUS.ALREADY_EXISTS:
      return 'ALREADY_EXISTS';
    case GRPC_STATUS.FAILED_PRECONDITION:
    case GRPC_STATUS.ABORTED:
      return 'CONFLICT';
    case GRPC_STATUS.RESOURCE_EXHAUSTED:
      return 'QUOTA_EXCEEDED';
    case GRPC_STATUS.PERMISSION_DENIED:
    case GRPC_STATUS.UNAUTHENTICATED:
      return 'PERMISSION_DENIED';
    case GRPC_STATUS.UNAVAILABLE:
    case GRPC_STATUS.DEADLINE_EXCEEDED:
    case GRPC_STATUS.CANCELLED:
      return 'UNAVAILABLE';
    default:
      return 'INTERNAL';
  }
}
