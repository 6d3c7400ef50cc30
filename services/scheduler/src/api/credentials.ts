/**
 * Tenants' NATS credentials (`nfv.v1.admin.tenants.credentials`, docs/security.md). Each call issues a new user of
 * the application account confined to the tenant's subjects (a JWT signed by the account signing key: nats-server
 * needs no change to accept it). `rotate` and deleting the tenant revoke the earlier users: their public keys go
 * into the account JWT's revocations, which is re-signed with the operator signing key and pushed on
 * `$SYS.REQ.CLAIMS.UPDATE`; nats-server disconnects the revoked users at once and nobody else.
 *
 * What each tenant was issued and what was revoked is kept in the `edgenfv_credentials` bucket (public keys only,
 * never a seed), so every scheduler replica builds the same account JWT, and a restarted one pushes it again.
 */
import { connect, credsAuthenticator, type NatsConnection } from 'nats';
import { appAccountJwt, issueUser, publicKeyOfSeed, type IssuerConfig } from '@edgenfv/nats-launcher/internal/auth';
import { UnavailableError, type TenantCredentials } from '@edgenfv/contracts';
import type { Logger } from '@edgenfv/telemetry';
import type { CredentialRecord, JsonBucket } from '../state/store.js';

export class CredentialIssuer {
  private sys?: NatsConnection;
  private readonly signingPublicKey: string;

  constructor(
    private readonly cfg: IssuerConfig,
    private readonly servers: string[],
    private readonly bucket: JsonBucket<CredentialRecord>,
    private readonly logger: Logger,
  ) {
    this.signingPublicKey = publicKeyOfSeed(cfg.accountSigningSeed);
  }

  /** Connects the system-account user and pushes the account JWT (every replica, at start: converges after a restart). */
  async start(): Promise<void> {
    this.sys = await connect({
      servers: this.servers,
      name: 'edgenfv-scheduler-claims',
      authenticator: credsAuthenticator(new TextEncoder().encode(this.cfg.systemCreds)),
      inboxPrefix: this.cfg.systemInboxPrefix,
      maxReconnectAttempts: -1,
    });
    await this.push();
  }

  async stop(): Promise<void> {
    await this.sys?.close().catch(() => undefined);
  }

  /** Issues new credentials for an existing tenant; with `rotate`, revokes every earlier one first. */
  async issue(tenantId: string, rotate: boolean): Promise<TenantCredentials> {
    const user = await issueUser(this.cfg.accountPublicKey, this.cfg.accountSigningSeed, { kind: 'tenant', tenantId });
    let revokedSome = false;
    await this.bucket.mutate(tenantId, (cur) => {
      const rec: CredentialRecord = cur ?? { tenantId, active: {}, revoked: {} };
      revokedSome = rotate && Object.keys(rec.active).length > 0;
      if (rotate) revokeAll(rec, user.issuedAt);
      rec.active[user.publicKey] = user.issuedAt;
      return rec;
    });
    if (revokedSome) await this.push();
    this.logger.info({ tenantId, rotate, user: user.publicKey }, 'tenant credentials issued');
    return { servers: this.servers, creds: user.creds, inboxPrefix: user.inboxPrefix, tenantId };
  }

  /** Revokes every credential of a tenant (the tenant was deleted). */
  async revokeTenant(tenantId: string): Promise<void> {
    let changed = false;
    await this.bucket.mutate(tenantId, (cur) => {
      if (!cur || Object.keys(cur.active).length === 0) return undefined;
      changed = true;
      revokeAll(cur, nowSec());
      return cur;
    });
    if (changed) {
      await this.push();
      this.logger.info({ tenantId }, 'tenant credentials revoked');
    }
  }

  /** Builds the account JWT from every record's revocations and pushes it to nats-server (all servers of a cluster). */
  async push(): Promise<void> {
    if (!this.sys) throw new UnavailableError('the credential issuer is not connected');
    const revocations: Record<string, number> = {};
    for (const r of await this.bucket.list()) Object.assign(revocations, r.value.revoked);
    Object.assign(revocations, this.cfg.revoked ?? {}); // service users replaced by the appliance's rotation
    const jwt = await appAccountJwt(this.cfg.accountPublicKey, this.signingPublicKey, this.cfg.operatorSigningSeed, revocations);
    let reply: { data?: { code?: number; message?: string }; error?: { code?: number; description?: string } };
    try {
      const m = await this.sys.request('$SYS.REQ.CLAIMS.UPDATE', new TextEncoder().encode(jwt), { timeout: 5000 });
      reply = JSON.parse(new TextDecoder().decode(m.data)) as typeof reply;
    } catch (err) {
      throw new UnavailableError(`nats-server did not take the account update: ${(err as Error).message}`, { cause: err });
    }
    if (reply.error || reply.data?.code !== 200) {
      throw new UnavailableError(`nats-server refused the account update: ${JSON.stringify(reply.error ?? reply.data)}`);
    }
  }
}

function nowSec(): number {
  return Math.floor(Date.now() / 1000);
}

/** Moves every active key to the revoked ones; a JWT is refused when its iat is at or before the time given. */
function revokeAll(rec: CredentialRecord, at: number): void {
  for (const [pk, iat] of Object.entries(rec.active)) rec.revoked[pk] = Math.max(at, iat);
  rec.active = {};
}
