/**
 * A real OCI distribution registry for tests and `npm run demo:image` (Debian's docker-registry, filesystem storage, a config file in a
 * temporary folder, a random loopback port, optional htpasswd basic auth or token auth against a small token
 * service made here), and images pushed to it with skopeo from an OCI layout made here from a small busybox rootfs.
 */
import { execFile, execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { promisify } from 'node:util';
import { X509Certificate, createHash, randomBytes, sign } from 'node:crypto';
import { createServer as createHttpServer, type IncomingMessage } from 'node:http';
import { chmodSync, copyFileSync, mkdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

export interface TestRegistry {
  host: string;
  stop(): Promise<void>;
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
  });
}

/**
 * A token service as docker-registry's `auth: token` expects one (the distribution token spec): GET
 * `<realm>?service=...&scope=repository:<name>:<actions>` with the user's Basic credentials answers
 * `{token, access_token, expires_in}`, an RS256 JWT whose x5c names a self-signed certificate the registry trusts
 * (`rootcertbundle`). Anonymous or wrong credentials: 401. `requests` records what it was asked.
 */
export interface TokenService {
  realm: string;
  issuer: string;
  service: string;
  rootCertBundle: string;
  requests: { scope: string; user?: string; granted: boolean }[];
  stop(): Promise<void>;
}

const b64url = (b: Buffer | string): string => Buffer.from(b).toString('base64url');

export async function startTokenService(dir: string, user: { user: string; pass: string }): Promise<TokenService> {
  mkdirSync(dir, { recursive: true });
  const key = join(dir, 'token.key');
  const cert = join(dir, 'token.crt');
  execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', key, '-out', cert, '-days', '2', '-subj', '/CN=edgenfv-test-token'], { stdio: 'pipe' });
  const keyPem = readFileSync(key, 'utf8');
  const x5c = new X509Certificate(readFileSync(cert)).raw.toString('base64');
  const issuer = 'edgenfv-test-issuer';
  const service = 'edgenfv-test-registry';
  const requests: TokenService['requests'] = [];
  const who = (req: IncomingMessage): string | undefined => {
    const m = /^Basic (.+)$/.exec(req.headers.authorization ?? '');
    if (!m) return undefined;
    const [u, ...p] = Buffer.from(m[1]!, 'base64').toString('utf8').split(':');
    return u === user.user && p.join(':') === user.pass ? u : `!${u ?? ''}`;
  };
  const server = createHttpServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://x');
    const scope = url.searchParams.get('scope') ?? '';
    const u = who(req);
    const granted = u !== undefined && !u.startsWith('!') && url.searchParams.get('service') === service;
    requests.push({ scope, ...(u ? { user: u } : {}), granted });
    if (!granted) {
      res.writeHead(401, { 'content-type': 'application/json' }).end(JSON.stringify({ details: 'credentials needed' }));
      return;
    }
    const access = scope
      .split(' ')
      .filter(Boolean)
      .map((sc) => {
        const [type, name, actions] = sc.split(':');
        return { type, name, actions: (actions ?? '').split(',').filter((a) => a === 'pull' || a === 'push') };
      });
    const now = Math.floor(Date.now() / 1000);
    const header = b64url(JSON.stringify({ typ: 'JWT', alg: 'RS256', x5c: [x5c] }));
    const claims = b64url(JSON.stringify({ iss: issuer, sub: u, aud: service, exp: now + 300, nbf: now - 10, iat: now, jti: randomBytes(8).toString('hex'), access }));
    const token = `${header}.${claims}.${b64url(sign('sha256', Buffer.from(`${header}.${claims}`), keyPem))}`;
    res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ token, access_token: token, expires_in: 300 }));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as { port: number }).port;
  return {
    realm: `http://127.0.0.1:${port}/token`,
    issuer,
    service,
    rootCertBundle: cert,
    requests,
    stop: () => new Promise<void>((r) => server.close(() => r())),
  };
}

/** `auth`: htpasswd basic auth with one user, or token auth against a token service (startTokenService). */
export async function startRegistry(dir: string, auth?: { user: string; pass: string } | { token: TokenService }): Promise<TestRegistry> {
  mkdirSync(join(dir, 'storage'), { recursive: true });
  const port = await freePort();
  let authBlock = '';
  if (auth && 'token' in auth) {
    const t = auth.token;
    authBlock = `auth:\n  token:\n    realm: ${t.realm}\n    service: ${t.service}\n    issuer: ${t.issuer}\n    rootcertbundle: ${t.rootCertBundle}\n`;
  } else if (auth) {
    const hash = execFileSync('python3', ['-c', 'import crypt,sys; print(crypt.crypt(sys.argv[1], crypt.mksalt(crypt.METHOD_BLOWFISH)))', auth.pass], { stderr: 'ignore' } as never)
      .toString()
      .trim();
    writeFileSync(join(dir, 'htpasswd'), `${auth.user}:${hash}\n`);
    authBlock = `auth:\n  htpasswd:\n    realm: test\n    path: ${join(dir, 'htpasswd')}\n`;
  }
  const cfg = join(dir, 'config.yml');
  writeFileSync(
    cfg,
    `version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: ${join(dir, 'storage')}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:${port}\n${authBlock}`,
  );
  const logs: string[] = [];
  const child: ChildProcess = spawn('docker-registry', ['serve', cfg], { stdio: ['ignore', 'pipe', 'pipe'] });
  child.stdout!.on('data', (d: Buffer) => logs.push(d.toString()));
  child.stderr!.on('data', (d: Buffer) => logs.push(d.toString()));
  const host = `127.0.0.1:${port}`;
  for (let i = 0; ; i++) {
    if (child.exitCode !== null) throw new Error(`docker-registry exited: ${logs.join('')}`);
    const ok = await fetch(`http://${host}/v2/`).then((r) => r.status === 200 || r.status === 401, () => false);
    if (ok) break;
    if (i > 200) throw new Error(`docker-registry did not answer on ${host}: ${logs.join('')}`);
    await sleep(50);
  }
  return {
    host,
    async stop() {
      if (child.exitCode !== null) return;
      const gone = new Promise((r) => child.once('exit', r));
      child.kill('SIGTERM');
      await Promise.race([gone, sleep(5000)]);
      if (child.exitCode === null) child.kill('SIGKILL');
    },
  };
}

const execFileAsync = promisify(execFile);
const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

/**
 * An OCI layout at `<dir>/layout` with one image tagged `tag`: a busybox rootfs (sh, echo, sleep, cat ...) plus
 * `files`, running `cmd`. Returns the layout folder and the manifest digest.
 */
export function makeBusyboxLayout(dir: string, tag: string, files: Record<string, string>, cmd: string[]): { layout: string; digest: string } {
  const fs = join(dir, 'rootfs');
  mkdirSync(join(fs, 'bin'), { recursive: true });
  copyFileSync('/bin/busybox', join(fs, 'bin', 'busybox'));
  chmodSync(join(fs, 'bin', 'busybox'), 0o755);
  for (const applet of ['sh', 'echo', 'sleep', 'cat', 'ls', 'true', 'hostname']) symlinkSync('busybox', join(fs, 'bin', applet));
  for (const [path, text] of Object.entries(files)) {
    mkdirSync(join(fs, path, '..'), { recursive: true });
    writeFileSync(join(fs, path), text, { mode: 0o755 });
  }
  const layout = join(dir, 'layout');
  const blobs = join(layout, 'blobs', 'sha256');
  mkdirSync(blobs, { recursive: true });
  const put = (b: Buffer): { digest: string; size: number } => {
    const d = sha(b);
    writeFileSync(join(blobs, d), b);
    return { digest: `sha256:${d}`, size: b.length };
  };
  const layerTar = execFileSync('tar', ['--sort=name', '--mtime=@0', '--owner=0', '--group=0', '--numeric-owner', '-C', fs, '-cf', '-', '.'], { maxBuffer: 64 << 20 });
  const gz = execFileSync('gzip', ['-n', '-c'], { input: layerTar, maxBuffer: 64 << 20 });
  const layer = put(gz);
  const config = put(
    Buffer.from(
      JSON.stringify({
        architecture: 'amd64',
        os: 'linux',
        config: { Cmd: cmd, Env: ['PATH=/bin'], WorkingDir: '/' },
        rootfs: { type: 'layers', diff_ids: [`sha256:${sha(layerTar)}`] },
      }),
    ),
  );
  const manifestBytes = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.manifest.v1+json',
      config: { mediaType: 'application/vnd.oci.image.config.v1+json', ...config },
      layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', ...layer }],
    }),
  );
  const manifest = put(manifestBytes);
  writeFileSync(join(layout, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }));
  writeFileSync(
    join(layout, 'index.json'),
    JSON.stringify({
      schemaVersion: 2,
      manifests: [{ mediaType: 'application/vnd.oci.image.manifest.v1+json', ...manifest, annotations: { 'org.opencontainers.image.ref.name': tag } }],
    }),
  );
  return { layout, digest: manifest.digest };
}

/**
 * Tags `tag` in the layout as an OCI image index (a manifest list) holding the image for linux/amd64 and a second
 * entry for linux/arm64 (the same manifest: only the platform entry differs). Returns the index's digest.
 */
export function addIndexTag(layout: string, manifestDigest: string, tag: string): string {
  const blobs = join(layout, 'blobs', 'sha256');
  const indexPath = join(layout, 'index.json');
  const top = JSON.parse(readFileSync(indexPath, 'utf8')) as { manifests: { digest: string; size: number; mediaType: string; annotations?: Record<string, string> }[] };
  const m = top.manifests.find((x) => x.digest === manifestDigest)!;
  const entry = (architecture: string) => ({ mediaType: m.mediaType, digest: m.digest, size: m.size, platform: { os: 'linux', architecture } });
  const bytes = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: 'application/vnd.oci.image.index.v1+json', manifests: [entry('arm64'), entry('amd64')] }));
  const d = sha(bytes);
  writeFileSync(join(blobs, d), bytes);
  top.manifests.push({ mediaType: 'application/vnd.oci.image.index.v1+json', digest: `sha256:${d}`, size: bytes.length, annotations: { 'org.opencontainers.image.ref.name': tag } });
  writeFileSync(indexPath, JSON.stringify(top));
  return `sha256:${d}`;
}

function skopeoArgs(layout: string, tag: string, host: string, repo: string, creds?: { user: string; pass: string }): { copy: string[]; inspect: string[] } {
  const auth = creds ? ['--dest-creds', `${creds.user}:${creds.pass}`] : [];
  const src = creds ? ['--creds', `${creds.user}:${creds.pass}`] : [];
  return {
    copy: ['copy', '--quiet', '--multi-arch', 'all', '--dest-tls-verify=false', ...auth, `oci:${layout}:${tag}`, `docker://${host}/${repo}:${tag}`],
    inspect: ['inspect', '--tls-verify=false', ...src, '--format', '{{.Digest}}', `docker://${host}/${repo}:${tag}`],
  };
}

/** skopeo copy of the layout's `tag` to `<host>/<repo>:<tag>` (plain HTTP); returns the digest the registry holds. */
export function pushLayout(layout: string, tag: string, host: string, repo: string, creds?: { user: string; pass: string }): string {
  const a = skopeoArgs(layout, tag, host, repo, creds);
  execFileSync('skopeo', a.copy, { stdio: 'pipe' });
  return execFileSync('skopeo', a.inspect).toString().trim();
}

/** pushLayout without blocking this process (needed when this process serves the registry's token service). */
export async function pushLayoutAsync(layout: string, tag: string, host: string, repo: string, creds?: { user: string; pass: string }): Promise<string> {
  const a = skopeoArgs(layout, tag, host, repo, creds);
  await execFileAsync('skopeo', a.copy);
  return (await execFileAsync('skopeo', a.inspect)).stdout.trim();
}
