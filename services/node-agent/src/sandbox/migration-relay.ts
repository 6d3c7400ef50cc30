/**
 * The migration stream between two nodes' QEMUs, relayed by their node agents over TCP (docs/migration.md). A QEMU
 * runs chrooted in a sandbox netns: it reaches neither the other node nor its file system. So:
 * - destination: QEMU listens on `<vmRoot>/in.sock`; the agent listens on `<node address>:<random port>` (the
 *   address it reaches the control plane from) and relays the first connection that presents the one-time token
 *   to that socket; the URI it reports is `tcp:<address>:<port>`, the token goes with it (through the scheduler);
 * - source: the agent listens on `<vmRoot>/out.sock` (QEMU's `unix:/out.sock`) and relays QEMU's connection to the
 *   destination's TCP address, sending the token first.
 * Each relay takes one connection and closes when the stream ends or the migration is over.
 */
import { execFile } from 'node:child_process';
import { randomBytes, timingSafeEqual } from 'node:crypto';
import { chmodSync, rmSync } from 'node:fs';
import { createConnection, createServer, type Server, type Socket } from 'node:net';
import { promisify } from 'node:util';
import { UnavailableError } from '@edgenfv/contracts';

const run = promisify(execFile);
const TOKEN_BYTES = 32;

/** The address this node reaches `host` from (`ip route get`): where another node reaches this one. */
export async function sourceAddressTowards(host: string): Promise<string | undefined> {
  if (!/^[0-9a-fA-F:.]+$/.test(host)) return undefined;
  try {
    const { stdout } = await run('ip', ['-j', 'route', 'get', host]);
    const r = (JSON.parse(stdout) as { prefsrc?: string }[])[0];
    return r?.prefsrc && r.prefsrc !== '127.0.0.1' ? r.prefsrc : undefined;
  } catch {
    return undefined;
  }
}

export interface Relay {
  close(): void;
}

/**
 * Relays both ways. When one side has sent everything and closed, the other is ended, not destroyed: what was
 * written to it and not yet flushed (the end of the VM's state: its devices, sent last) still goes out. (Destroying
 * it dropped that tail when the receiver read slower than the sender wrote, and the destination QEMU exited
 * half-way through loading after the source had reported the migration completed.)
 */
function pipeBoth(a: Socket, b: Socket): void {
  a.pipe(b);
  b.pipe(a);
  const kill = (): void => {
    a.destroy();
    b.destroy();
  };
  a.on('error', kill);
  b.on('error', kill);
  const endOther = (other: Socket) => (): void => {
    other.end();
    // a peer that never closes its side is cut off at last (the stream is over either way)
    other.setTimeout(60_000, () => other.destroy());
  };
  a.on('close', endOther(b));
  b.on('close', endOther(a));
}

/** Destination: a TCP listener on `address` relaying one authenticated connection to QEMU's unix socket. */
export async function incomingRelay(address: string, qemuSocket: string): Promise<Relay & { uri: string; token: string }> {
  const token = randomBytes(TOKEN_BYTES);
  let taken = false;
  const server: Server = createServer((sock) => {
    if (taken) return void sock.destroy();
    let got = Buffer.alloc(0);
    const onData = (d: Buffer): void => {
      got = Buffer.concat([got, d]);
      if (got.length < TOKEN_BYTES) return;
      sock.off('data', onData);
      sock.pause();
      if (taken || !timingSafeEqual(got.subarray(0, TOKEN_BYTES), token)) return void sock.destroy();
      taken = true;
      server.close();
      const q = createConnection({ path: qemuSocket }, () => {
        const rest = got.subarray(TOKEN_BYTES);
        if (rest.length) q.write(rest);
        pipeBoth(sock, q);
        sock.resume();
      });
      q.on('error', () => sock.destroy());
    };
    sock.on('data', onData);
    sock.on('error', () => sock.destroy());
    sock.setTimeout(30_000, () => {
      if (!taken) sock.destroy();
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, address, () => resolve());
  });
  const port = (server.address() as { port: number }).port;
  const host = address.includes(':') ? `[${address}]` : address;
  return { uri: `tcp:${host}:${port}`, token: token.toString('hex'), close: () => server.close() };
}

/**
 * Source: a unix listener at `hostPath` (QEMU's `unix:<path in its root>`) relaying QEMU's connection to the
 * destination's `tcp:` URI, the token first.
 */
export async function outgoingRelay(hostPath: string, uri: string, tokenHex: string): Promise<Relay> {
  const m = /^tcp:\[?([0-9a-fA-F:.]+)\]?:(\d+)$/.exec(uri);
  if (!m) throw new UnavailableError(`not a tcp: URI: ${uri}`);
  const token = Buffer.from(tokenHex, 'hex');
  if (token.length !== TOKEN_BYTES) throw new UnavailableError('the migration token must be 32 bytes (hex)');
  rmSync(hostPath, { force: true });
  let taken = false;
  const server = createServer((q) => {
    if (taken) return void q.destroy();
    taken = true;
    server.close();
    q.pause();
    const t = createConnection({ host: m[1]!, port: Number(m[2]) }, () => {
      t.write(token);
      pipeBoth(q, t);
      q.resume();
    });
    t.on('error', () => q.destroy());
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(hostPath, () => resolve());
  });
  chmodSync(hostPath, 0o666); // the VM's uid connects
  return {
    close: () => {
      server.close();
      rmSync(hostPath, { force: true });
    },
  };
}
