export { HostChannel, type HostChannelOptions } from './channel.js';
export { AgentClient, fromServiceError, HOST_VERSION, type CallOptions } from './agent-client.js';
export { connectAgent, type AgentConnection, type ConnectAgentOptions } from './connection.js';
export { buildGuestImage, bundleGuestAgent, defaultCacheDir, readModuleList, IMAGE_BUILDER_VERSION, SYSTEM_DISK_SERIAL, SYSTEM_DISK_FILE, type GuestImage, type GuestImageOptions, type KernelFlavor } from './image-builder.js';
export { packOciLayoutDisk, parseOciRef, guestImageRef, type OciDisk } from './oci-disk.js';
