import type { NatsConnection } from 'nats';
import type { NetworkConfig } from '@edgenfv/contracts';
import type { OpContext } from '../ops/op-occurrences.js';
import type { SchedulerCore } from '../leader/core.js';
import type { CredentialIssuer } from './credentials.js';

/** What every API handler may use; built once by the app, shared by all requests. */
export interface ApiContext extends OpContext {
  networks: ReadonlyMap<string, NetworkConfig>;
  /** Node registry (cordon, uncordon) and cluster state (what each node holds). */
  nodes: SchedulerCore;
  /** Issues and revokes tenants' NATS credentials; absent when the scheduler runs without an issuer (no NATS auth). */
  credentials?: CredentialIssuer;
  /** Requests to node agents (`nfv.v1.internal.nodes.<n>.logs|exec`). */
  nc: NatsConnection;
}
