import type { NatsConnection } from 'nats';
import type { Logger } from '@edgenfv/telemetry';
import type { NetworkConfig, OpOcc } from '@edgenfv/contracts';
import type { Store } from '../state/store.js';
import type { Notifier } from '../ops/notifier.js';
import type { SchedulerCore } from '../leader/core.js';
import type { CredentialIssuer } from './credentials.js';

/** What every API handler may use; built once by the app, shared by all requests. */
export interface ApiContext {
  store: Store;
  logger: Logger;
  notifier: Notifier;
  networks: ReadonlyMap<string, NetworkConfig>;
  now: () => Date;
  newId: (prefix: string) => string;
  /** Called after an op occurrence was created, so the leader can pick it up at once. */
  onOpOccCreated: (op: OpOcc) => void;
  /** Node registry (cordon, uncordon) and cluster state (what each node holds). */
  nodes: SchedulerCore;
  /** Issues and revokes tenants' NATS credentials; absent when the scheduler runs without an issuer (no NATS auth). */
  credentials?: CredentialIssuer;
  /** Requests to node agents (`nfv.v1.internal.nodes.<n>.logs|exec`). */
  nc: NatsConnection;
}
