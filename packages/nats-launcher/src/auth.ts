/**
 * NATS decentralised (JWT) auth for edgenfv: one operator, the system account, and one application account
 * (`EDGENFV`, JetStream on) whose users are the principals: the operator (everything), each scheduler replica, each
 * node agent, the dashboard, and one per tenant, each with the least subjects its role needs (docs/security.md).
 *
 * nats-server runs with the built-in full resolver: users are JWTs signed by the account's signing key, so adding a
 * tenant changes nothing on the server; revoking one is a new account JWT (with the user's key under
 * `revocations`) pushed on `$SYS.REQ.CLAIMS.UPDATE`, which the server applies live, disconnecting the revoked user
 * and nobody else. The same claims are built here for the appliance, the deploy/ tool and the scheduler (which
 * re-signs the account with the operator signing key when it revokes).
 */
import * as natsJwt from 'nats-jwt';
import { encodeAccount, encodeOperator, encodeUser, fmtCreds, type Account, type KeyPair, type Permissions } from 'nats-jwt';

// nats-jwt 0.0.9's key functions, typed: its lib/nkeys.d.ts declares them `any` (its KeyPair type is right).
const createOperator = natsJwt.createOperator as () => KeyPair;
const createAccount = natsJwt.createAccount as () => KeyPair;
const createUser = natsJwt.createUser as () => KeyPair;
const fromSeed = natsJwt.fromSeed as (seed: Uint8Array) => KeyPair;

/** The public key of an nkey seed (`SA...` -> `A...`). */
export function publicKeyOfSeed(seed: string): string {
  return fromSeed(new TextEncoder().encode(seed)).getPublicKey();
}

export const APP_ACCOUNT_NAME = 'EDGENFV';
export const SYS_ACCOUNT_NAME = 'SYS';

/** Everything a site's NATS trust is made of. The operator seed and the account identity seed stay with the operator. */
export interface TrustBundle {
  operator: { seed: string; publicKey: string; jwt: string; signingSeed: string };
  system: { seed: string; publicKey: string; jwt: string };
  app: { seed: string; publicKey: string; jwt: string; signingSeed: string };
}

/**
 * What a scheduler needs to issue and revoke tenant credentials: the account's signing key (user JWTs), the operator
 * signing key (the account JWT with revocations), and a system-account user to push the account JWT.
 */
export interface IssuerConfig {
  accountPublicKey: string;
  accountSigningSeed: string;
  operatorSigningSeed: string;
  /** Text of a creds file for the system account (publish on $SYS.REQ.CLAIMS.UPDATE only). */
  systemCreds: string;
  systemInboxPrefix: string;
  /**
   * Service users replaced by a rotation (public key -> time of the revocation, seconds): the scheduler puts them in
   * the account JWT's revocations with the tenants' (docs/security.md, "Service credentials").
   */
  revoked?: Record<string, number>;
}

export type Role =
  | { kind: 'operator' }
  | { kind: 'scheduler'; id: string }
  | { kind: 'node'; nodeId: string }
  | { kind: 'dashboard' }
  | { kind: 'tenant'; tenantId: string };

const enc = new TextDecoder();
const s = (u: Uint8Array): string => enc.decode(u);

/** The inbox prefix of each principal: restricted principals may only subscribe below their own. */
export function inboxPrefix(role: Role): string {
  switch (role.kind) {
    case 'operator':
      return '_INBOX';
    case 'scheduler':
      return '_INBOX_svc_scheduler';
    case 'node':
      return `_INBOX_n_${role.nodeId}`;
    case 'dashboard':
      return '_INBOX_svc_dashboard';
    case 'tenant':
      return tenantInboxPrefix(role.tenantId);
  }
}

export function tenantInboxPrefix(tenantId: string): string {
  return `_INBOX_t_${tenantId}`;
}

/** Reply subjects answer a request once, within a minute (NATS allow_responses). */
const RESP = { max: 1, ttl: 60_000_000_000 };

const EVENTS_STREAM = 'EDGENFV_EVENTS';
/** Read-only JetStream API on the events stream (stream info, get a message, an ordered consumer). */
const EVENTS_READ = [
  '$JS.API.INFO',
  `$JS.API.STREAM.INFO.${EVENTS_STREAM}`,
  `$JS.API.STREAM.MSG.GET.${EVENTS_STREAM}`,
  `$JS.API.DIRECT.GET.${EVENTS_STREAM}`,
  `$JS.API.DIRECT.GET.${EVENTS_STREAM}.>`,
  `$JS.API.CONSUMER.CREATE.${EVENTS_STREAM}`,
  `$JS.API.CONSUMER.CREATE.${EVENTS_STREAM}.>`,
  `$JS.API.CONSUMER.INFO.${EVENTS_STREAM}.>`,
  `$JS.API.CONSUMER.DELETE.${EVENTS_STREAM}.>`,
  // an ordered push consumer answers the stream's flow control
  `$JS.FC.${EVENTS_STREAM}.>`,
];

/** The NATS permissions of a role (user JWT `pub`/`sub`/`resp`); undefined: no restriction (the operator). */
export function permissionsOf(role: Role): Partial<Permissions> | undefined {
  const inbox = `${inboxPrefix(role)}.>`;
  switch (role.kind) {
    case 'operator':
      return undefined;
    case 'scheduler':
      // State (KV, streams), the API it serves, notifications it publishes, the internal protocol. Replies only to
      // requests it received (resp), and it checks those go to an inbox (docs/security.md).
      return {
        pub: { allow: ['$JS.API.>', '$KV.>', '$JS.ACK.>', '$JS.FC.>', 'nfv.v1.tenant.*.events.>', 'nfv.v1.internal.>'], deny: [] },
        sub: { allow: ['nfv.v1.admin.>', 'nfv.v1.tenant.*.>', 'nfv.v1.internal.>', inbox], deny: [] },
        resp: RESP,
      };
    case 'node': {
      const n = role.nodeId;
      // Its own internal subjects, its own status keys; reads its own allocations through a KV watch whose
      // consumer may only filter on its own keys.
      return {
        pub: {
          allow: [
            `nfv.v1.internal.nodes.${n}.>`,
            `$KV.edgenfv_status.${n}.>`,
            '$JS.API.INFO',
            '$JS.API.STREAM.INFO.KV_edgenfv_allocs',
            '$JS.API.STREAM.INFO.KV_edgenfv_status',
            `$JS.API.CONSUMER.CREATE.KV_edgenfv_allocs.*.$KV.edgenfv_allocs.${n}.>`,
            `$JS.API.DIRECT.GET.KV_edgenfv_allocs.$KV.edgenfv_allocs.${n}.>`,
            `$JS.API.DIRECT.GET.KV_edgenfv_status.$KV.edgenfv_status.${n}.>`,
            '$JS.API.CONSUMER.DELETE.KV_edgenfv_allocs.*',
          ],
          deny: [],
        },
        sub: { allow: [inbox, `nfv.v1.internal.nodes.${n}.>`], deny: [] },
        resp: RESP,
      };
    }
    case 'dashboard':
      return {
        pub: { allow: ['nfv.v1.admin.>', 'nfv.v1.tenant.*.>', ...EVENTS_READ], deny: ['nfv.v1.tenant.*.events.>'] },
        // node pictures follow the heartbeats (read only)
        sub: { allow: [inbox, 'nfv.v1.tenant.*.events.>', 'nfv.v1.internal.nodes.*.heartbeat'], deny: [] },
      };
    case 'tenant': {
      const t = role.tenantId;
      return {
        pub: { allow: [`nfv.v1.tenant.${t}.>`], deny: [`nfv.v1.tenant.${t}.events.>`] },
        sub: { allow: [inbox, `nfv.v1.tenant.${t}.events.>`], deny: [] },
      };
    }
  }
}

export function roleName(role: Role): string {
  switch (role.kind) {
    case 'operator':
    case 'dashboard':
      return role.kind;
    case 'scheduler':
      return `scheduler-${role.id}`;
    case 'node':
      return `node-${role.nodeId}`;
    case 'tenant':
      return `tenant-${role.tenantId}`;
  }
}

/** The application account's claims: JetStream without limits, its signing key, the revoked user keys. */
export function appAccountClaims(signingPublicKey: string, revocations: Record<string, number> = {}): Partial<Account> {
  return {
    limits: {
      subs: -1, data: -1, payload: -1, imports: -1, exports: -1, wildcards: true, conn: -1, leaf: -1,
      mem_storage: -1, disk_storage: -1, streams: -1, consumer: -1,
    },
    signing_keys: [signingPublicKey],
    ...(Object.keys(revocations).length ? { revocations } : {}),
  };
}

/** The application account JWT (signed by the operator signing key). */
export async function appAccountJwt(accountPublicKey: string, accountSigningPublicKey: string, operatorSigningSeed: string, revocations: Record<string, number> = {}): Promise<string> {
  return encodeAccount(APP_ACCOUNT_NAME, accountPublicKey, appAccountClaims(accountSigningPublicKey, revocations), {
    signer: fromSeed(new TextEncoder().encode(operatorSigningSeed)),
  });
}

/** A new operator, system account and application account. */
export async function createTrust(operatorName = 'edgenfv'): Promise<TrustBundle> {
  const op = createOperator();
  const opSigning = createOperator();
  const sys = createAccount();
  const app = createAccount();
  const appSigning = createAccount();
  const operatorJwt = await encodeOperator(operatorName, op, {
    signing_keys: [opSigning.getPublicKey()],
    system_account: sys.getPublicKey(),
  });
  // no limits written means zero connections in a v2 account JWT
  const sysJwt = await encodeAccount(SYS_ACCOUNT_NAME, sys, { limits: { subs: -1, data: -1, payload: -1, imports: -1, exports: -1, wildcards: true, conn: -1, leaf: -1 } }, { signer: opSigning });
  const appJwt = await appAccountJwt(app.getPublicKey(), appSigning.getPublicKey(), s(opSigning.getSeed()));
  return {
    operator: { seed: s(op.getSeed()), publicKey: op.getPublicKey(), jwt: operatorJwt, signingSeed: s(opSigning.getSeed()) },
    system: { seed: s(sys.getSeed()), publicKey: sys.getPublicKey(), jwt: sysJwt },
    app: { seed: s(app.getSeed()), publicKey: app.getPublicKey(), jwt: appJwt, signingSeed: s(appSigning.getSeed()) },
  };
}

export interface IssuedUser {
  /** The text of a NATS creds file (JWT + seed). */
  creds: string;
  /** The user's public key (what a revocation names). */
  publicKey: string;
  inboxPrefix: string;
  /** Seconds since the epoch (the JWT's iat). */
  issuedAt: number;
}

/**
 * A user of the application account for a role, signed by the account signing key; `expiresAt` (seconds since the
 * epoch): nats-server refuses it from then on and closes its connections.
 */
export async function issueUser(accountPublicKey: string, accountSigningSeed: string, role: Role, opts: { expiresAt?: number } = {}): Promise<IssuedUser> {
  const u = createUser();
  const perms = permissionsOf(role);
  const jwt = await encodeUser(roleName(role), u, accountPublicKey, perms ?? {}, {
    signer: fromSeed(new TextEncoder().encode(accountSigningSeed)),
    ...(opts.expiresAt !== undefined ? { exp: opts.expiresAt } : {}),
  });
  const iat = (JSON.parse(Buffer.from(jwt.split('.')[1], 'base64url').toString('utf8')) as { iat: number }).iat;
  return { creds: s(fmtCreds(jwt, u)), publicKey: u.getPublicKey(), inboxPrefix: inboxPrefix(role), issuedAt: iat };
}

/** A system-account user that may only push account JWTs ($SYS.REQ.CLAIMS.UPDATE). */
export async function issueSystemUser(trust: TrustBundle): Promise<IssuedUser> {
  const u = createUser();
  const prefix = '_INBOX_svc_claims';
  const jwt = await encodeUser('claims-updater', u, fromSeed(new TextEncoder().encode(trust.system.seed)), {
    pub: { allow: ['$SYS.REQ.CLAIMS.UPDATE', '$SYS.REQ.ACCOUNT.*.CLAIMS.UPDATE'], deny: [] },
    sub: { allow: [`${prefix}.>`], deny: [] },
  });
  const iat = (JSON.parse(Buffer.from(jwt.split('.')[1], 'base64url').toString('utf8')) as { iat: number }).iat;
  return { creds: s(fmtCreds(jwt, u)), publicKey: u.getPublicKey(), inboxPrefix: prefix, issuedAt: iat };
}

export async function issuerConfig(trust: TrustBundle): Promise<IssuerConfig> {
  const sysUser = await issueSystemUser(trust);
  return {
    accountPublicKey: trust.app.publicKey,
    accountSigningSeed: trust.app.signingSeed,
    operatorSigningSeed: trust.operator.signingSeed,
    systemCreds: sysUser.creds,
    systemInboxPrefix: sysUser.inboxPrefix,
  };
}

export function issueRole(trust: TrustBundle, role: Role, opts: { expiresAt?: number } = {}): Promise<IssuedUser> {
  return issueUser(trust.app.publicKey, trust.app.signingSeed, role, opts);
}

/** The user public key and the expiry (seconds, if any) of a creds file's JWT. */
export function credsClaims(creds: string): { publicKey: string; issuedAt: number; expiresAt?: number } {
  const jwt = /-----BEGIN NATS USER JWT-----\s*(\S+)\s*------END NATS USER JWT------/.exec(creds)?.[1];
  if (!jwt) throw new Error('not a NATS creds file (no user JWT)');
  const c = JSON.parse(Buffer.from(jwt.split('.')[1] ?? '', 'base64url').toString('utf8')) as { sub: string; iat: number; exp?: number };
  return { publicKey: c.sub, issuedAt: c.iat, ...(c.exp !== undefined ? { expiresAt: c.exp } : {}) };
}

/** The nats-server config lines of the JWT model (operator, system account, full resolver with both accounts preloaded). */
export function resolverConfig(trust: Pick<TrustBundle, 'operator' | 'system' | 'app'>, resolverDir: string): string[] {
  const q = (x: string): string => JSON.stringify(x);
  return [
    `operator: ${q(trust.operator.jwt)}`,
    `system_account: ${q(trust.system.publicKey)}`,
    `resolver: { type: full, dir: ${q(resolverDir)}, allow_delete: false, interval: "2m", timeout: "5s" }`,
    'resolver_preload: {',
    `  ${trust.system.publicKey}: ${q(trust.system.jwt)}`,
    `  ${trust.app.publicKey}: ${q(trust.app.jwt)}`,
    '}',
  ];
}
