/**
 * A small OCI distribution (v2 API) client: what the node needs to pull one image, nothing more. Manifest lists /
 * OCI indexes (the linux/amd64 entry), image manifests (OCI and Docker schema 2), blobs streamed to a file while
 * hashed; bearer-token (RFC 6750, the registry names the token service in WWW-Authenticate) and basic auth with
 * the node's credentials; HTTPS unless the node config lists the host with `plainHttp: true`. Every digest is
 * checked; a body larger than it said, or than the limit, is cut off. Errors are UnavailableError naming the image.
 */
import { createHash } from 'node:crypto';
import { open, rm } from 'node:fs/promises';
import { UnavailableError } from '@edgenfv/contracts';
import type { RegistryConfig } from '../config.js';

export const MEDIA = {
  ociIndex: 'application/vnd.oci.image.index.v1+json',
  ociManifest: 'application/vnd.oci.image.manifest.v1+json',
  dockerList: 'application/vnd.docker.distribution.manifest.list.v2+json',
  dockerManifest: 'application/vnd.docker.distribution.manifest.v2+json',
} as const;
const ACCEPT = [MEDIA.ociIndex, MEDIA.ociManifest, MEDIA.dockerList, MEDIA.dockerManifest].join(', ');
/** Layer media types the guest can unpack (tar, tar+gzip). */
export const LAYER_TYPES = [
  'application/vnd.oci.image.layer.v1.tar',
  'application/vnd.oci.image.layer.v1.tar+gzip',
  'application/vnd.docker.image.rootfs.diff.tar.gzip',
];
const MAX_MANIFEST_BYTES = 4 * 1024 * 1024;
const DIGEST = /^sha256:[a-f0-9]{64}$/;

export interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
  platform?: { os?: string; architecture?: string; variant?: string };
  urls?: string[];
}
export interface ImageManifest {
  mediaType?: string;
  config: Descriptor;
  layers: Descriptor[];
}
export interface FetchedManifest {
  digest: string;
  mediaType: string;
  bytes: Buffer;
}

export interface RegistryTarget {
  host: string;
  repository: string;
  /** For messages: the ref as the tenant wrote it. */
  ref: string;
}

export function sha256(b: Buffer): string {
  return `sha256:${createHash('sha256').update(b).digest('hex')}`;
}

/** `Bearer realm="...",service="...",scope="..."` -> scheme and params. */
export function parseChallenge(header: string): { scheme: string; params: Record<string, string> } {
  const m = /^\s*(\w+)\s*(.*)$/.exec(header);
  const params: Record<string, string> = {};
  if (!m) return { scheme: '', params };
  for (const p of m[2]!.matchAll(/(\w+)="([^"]*)"|(\w+)=([^,\s]*)/g)) params[(p[1] ?? p[3])!.toLowerCase()] = p[2] ?? p[4] ?? '';
  return { scheme: m[1]!.toLowerCase(), params };
}

export class RegistryClient {
  private readonly tokens = new Map<string, string>();

  constructor(
    private readonly registries: readonly Readonly<RegistryConfig>[],
    private readonly opts: { timeoutMs?: number } = {},
  ) {}

  private config(host: string): Readonly<RegistryConfig> | undefined {
    return this.registries.find((r) => r.host === host);
  }

  private base(t: RegistryTarget): string {
    return `${this.config(t.host)?.plainHttp ? 'http' : 'https'}://${t.host}/v2/${t.repository}`;
  }

  private fail(t: RegistryTarget, message: string, cause?: unknown): UnavailableError {
    return new UnavailableError(`image ${t.ref}: ${message}`, { details: { image: t.ref }, ...(cause ? { cause } : {}) });
  }

  private basic(host: string): string | undefined {
    const c = this.config(host);
    return c?.username !== undefined ? `Basic ${Buffer.from(`${c.username}:${c.password ?? ''}`).toString('base64')}` : undefined;
  }

  /** GET with the registry's auth dance: a 401 names Basic or a Bearer token service; the token is kept per scope. */
  private async get(t: RegistryTarget, url: string, headers: Record<string, string>, what: string): Promise<Response> {
    const scope = `repository:${t.repository}:pull`;
    const tokenKey = `${t.host}|${scope}`;
    const send = async (auth?: string): Promise<Response> => {
      try {
        return await fetch(url, {
          headers: { ...headers, ...(auth ? { authorization: auth } : {}) },
          signal: AbortSignal.timeout(this.opts.timeoutMs ?? 60_000),
        });
      } catch (err) {
        const cause = (err as { cause?: { code?: string; message?: string } }).cause;
        throw this.fail(t, `registry ${t.host} unreachable (${cause?.code ?? cause?.message ?? (err as Error).message})`, err);
      }
    };
    const cached = this.tokens.get(tokenKey);
    let res = await send(cached ? `Bearer ${cached}` : this.basic(t.host));
    if (res.status === 401) {
      await res.body?.cancel();
      const ch = parseChallenge(res.headers.get('www-authenticate') ?? '');
      if (ch.scheme === 'bearer' && ch.params.realm) {
        const token = await this.token(t, ch.params.realm, ch.params.service, ch.params.scope ?? scope);
        this.tokens.set(tokenKey, token);
        res = await send(`Bearer ${token}`);
      } else if (ch.scheme === 'basic') {
        const auth = this.basic(t.host);
        if (!auth) throw this.fail(t, `registry ${t.host} needs credentials (none in the node config's registries)`);
        if (!cached) throw this.fail(t, `registry ${t.host} refused the node's credentials`);
        res = await send(auth);
      }
      if (res.status === 401) {
        await res.body?.cancel();
        throw this.fail(t, `registry ${t.host} refused access to ${t.repository}${this.basic(t.host) ? " with the node's credentials" : ' (no credentials in the node config)'}`);
      }
    }
    if (res.status === 404) {
      await res.body?.cancel();
      throw this.fail(t, `${what} not found in ${t.host}/${t.repository}`);
    }
    if (!res.ok) {
      await res.body?.cancel();
      throw this.fail(t, `registry ${t.host} answered ${res.status} ${res.statusText} for ${what}`);
    }
    return res;
  }

  private async token(t: RegistryTarget, realm: string, service: string | undefined, scope: string): Promise<string> {
    let url: URL;
    try {
      url = new URL(realm);
    } catch {
      throw this.fail(t, `registry ${t.host} names a bad token realm ${JSON.stringify(realm)}`);
    }
    if (url.protocol !== 'https:' && !(url.protocol === 'http:' && this.config(t.host)?.plainHttp)) {
      throw this.fail(t, `token realm ${realm} is not HTTPS (plain HTTP only for registries with plainHttp)`);
    }
    if (service) url.searchParams.set('service', service);
    url.searchParams.set('scope', scope);
    const auth = this.basic(t.host);
    let res: Response;
    try {
      res = await fetch(url, { headers: auth ? { authorization: auth } : {}, signal: AbortSignal.timeout(this.opts.timeoutMs ?? 60_000) });
    } catch (err) {
      throw this.fail(t, `token service ${url.host} unreachable`, err);
    }
    if (!res.ok) {
      await res.body?.cancel();
      throw this.fail(t, `token service ${url.host} answered ${res.status}${auth ? '' : ' (no credentials in the node config)'}`);
    }
    const body = (await res.json().catch(() => ({}))) as { token?: string; access_token?: string };
    const token = body.token ?? body.access_token;
    if (!token) throw this.fail(t, `token service ${url.host} gave no token`);
    return token;
  }

  /** A manifest (or index) by tag or digest; verified against `expectDigest` and the registry's own digest header. */
  async manifest(t: RegistryTarget, reference: string, expectDigest?: string): Promise<FetchedManifest> {
    const res = await this.get(t, `${this.base(t)}/manifests/${reference}`, { accept: ACCEPT }, `manifest ${reference}`);
    const bytes = await readLimited(res, MAX_MANIFEST_BYTES, () => this.fail(t, `manifest ${reference} is larger than ${MAX_MANIFEST_BYTES} bytes`));
    const digest = sha256(bytes);
    if (expectDigest && digest !== expectDigest) throw this.fail(t, `digest mismatch: the registry's manifest is ${digest}, the reference pins ${expectDigest}`);
    const said = res.headers.get('docker-content-digest');
    if (said && DIGEST.test(said) && said !== digest) throw this.fail(t, `digest mismatch: manifest ${reference} hashes to ${digest}, the registry says ${said}`);
    let parsed: { mediaType?: string };
    try {
      parsed = JSON.parse(bytes.toString('utf8')) as { mediaType?: string };
    } catch {
      throw this.fail(t, `manifest ${reference} is not JSON`);
    }
    const mediaType = parsed.mediaType ?? res.headers.get('content-type')?.split(';')[0]?.trim() ?? '';
    return { digest, mediaType, bytes };
  }

  /**
   * Streams a blob into `dest` while hashing it; refuses more bytes than the descriptor's size, and any digest
   * but the descriptor's. `onBytes` sees the running count.
   */
  async blob(t: RegistryTarget, d: Descriptor, dest: string, onBytes?: (n: number) => void): Promise<void> {
    if (!DIGEST.test(d.digest)) throw this.fail(t, `unsupported digest ${d.digest} (sha256 only)`);
    const res = await this.get(t, `${this.base(t)}/blobs/${d.digest}`, {}, `blob ${d.digest}`);
    const fh = await open(dest, 'w', 0o600);
    const h = createHash('sha256');
    let n = 0;
    try {
      if (!res.body) throw this.fail(t, `blob ${d.digest}: empty answer`);
      for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
        n += chunk.length;
        if (n > d.size) throw this.fail(t, `blob ${d.digest} is larger than the ${d.size} bytes its manifest says`);
        h.update(chunk);
        await fh.write(chunk);
        onBytes?.(n);
      }
      const got = `sha256:${h.digest('hex')}`;
      if (got !== d.digest) throw this.fail(t, `digest mismatch: blob ${d.digest} hashes to ${got}`);
      if (n !== d.size) throw this.fail(t, `blob ${d.digest} has ${n} bytes, its manifest says ${d.size}`);
    } catch (err) {
      await res.body?.cancel().catch(() => undefined);
      await fh.close();
      await rm(dest, { force: true });
      throw err;
    }
    await fh.close();
  }
}

async function readLimited(res: Response, limit: number, tooBig: () => Error): Promise<Buffer> {
  const parts: Buffer[] = [];
  let n = 0;
  if (!res.body) return Buffer.alloc(0);
  for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
    n += chunk.length;
    if (n > limit) {
      await res.body.cancel().catch(() => undefined);
      throw tooBig();
    }
    parts.push(Buffer.from(chunk));
  }
  return Buffer.concat(parts);
}
