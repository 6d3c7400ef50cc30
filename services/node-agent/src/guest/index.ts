export { HostChannel } from './channel.js';
export { AgentClient } from './agent-client.js';
export { connectAgent, type AgentConnection } from './connection.js';
export { buildGuestImage, defaultCacheDir, SYSTEM_DISK_FILE, SYSTEM_DISK_SERIAL, type GuestImage } from './image-builder.js';
export { packOciLayoutDisk, parseOciRef, guestImageRef, type OciDisk } from './oci-disk.js';
