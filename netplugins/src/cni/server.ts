/**
 * The CNI server: runs CNI calls handed over by the C shim (src/cni/shim.c) in a long-lived process, so a call
 * costs a socket round trip instead of a Node.js start. The node agent hosts it in-process (`startCniServer`), or
 * `edgenfv-cnid` runs it alone. Plugins (and their per-device locks) are shared by every call.
 */
import { createServer, type Server } from 'node:net';
import { chmodSync, mkdirSync, unlinkSync } from 'node:fs';
import { dirname } from 'node:path';
import { ATTACHMENT_TYPES, type AttachmentResult, type AttachmentType } from '@edgenfv/contracts';
import type { AttachmentPlugin } from '../plugin.js';
import { execIpam, runCni } from './cni.js';
import { ShellRunner } from '../exec.js';
import { pluginFor, stateDirOf } from './factory.js';

export const DEFAULT_CNI_SOCKET = '/run/edgenfv/cni.sock';

export interface CniServerHandle {
  readonly socketPath: string;
  close(): Promise<void>;
}

/** Parses one request: header, type, NUL-separated environment, then stdin. */
export function parseRequest(buf: Buffer): { type: string; env: NodeJS.ProcessEnv; stdin: string } {
  const h1 = buf.indexOf(10);
  if (h1 < 0 || buf.subarray(0, h1).toString() !== 'EDGENFV-CNI 1') throw new Error('not an edgenfv CNI request');
  const h2 = buf.indexOf(10, h1 + 1);
  const type = buf.subarray(h1 + 1, h2).toString();
  const env: NodeJS.ProcessEnv = {};
  let i = h2 + 1;
  for (;;) {
    const z = buf.indexOf(0, i);
    if (z < 0) throw new Error('truncated environment');
    if (z === i) {
      i = z + 1;
      break;
    }
    const kv = buf.subarray(i, z).toString();
    const eq = kv.indexOf('=');
    if (eq > 0) env[kv.slice(0, eq)] = kv.slice(eq + 1);
    i = z + 1;
  }
  return { type, env, stdin: buf.subarray(i).toString() };
}

export async function startCniServer(opts: { socketPath?: string } = {}): Promise<CniServerHandle> {
  const socketPath = opts.socketPath ?? DEFAULT_CNI_SOCKET;
  mkdirSync(dirname(socketPath), { recursive: true, mode: 0o700 });
  try {
    unlinkSync(socketPath);
  } catch {
    /* none */
  }
  const plugins = new Map<string, AttachmentPlugin<unknown, AttachmentResult>>();
  const pluginOf = (type: AttachmentType, stateDir: string, env: NodeJS.ProcessEnv) => {
    const key = `${type}\0${stateDir}\0${env.EDGENFV_SRIOV_FAKE_ROOT ?? ''}`;
    let p = plugins.get(key);
    if (!p) plugins.set(key, (p = pluginFor(type, stateDir, env)));
    return p;
  };
  // host-local & co. run through a small long-lived shell (a fork from it costs less than a spawn from Node.js);
  // a shell of its own, so IPAM calls never queue behind link commands
  const ipamShell = new ShellRunner();
  const server: Server = createServer({ allowHalfOpen: true }, (sock) => {
    const chunks: Buffer[] = [];
    sock.on('data', (b: Buffer) => chunks.push(b));
    sock.on('error', () => undefined);
    sock.on('end', () => {
      void (async () => {
        let exitCode = 1;
        let stdout: string;
        try {
          const req = parseRequest(Buffer.concat(chunks));
          if (!(ATTACHMENT_TYPES as readonly string[]).includes(req.type)) throw new Error(`unknown plugin type ${JSON.stringify(req.type)}`);
          const type = req.type as AttachmentType;
          const out = await runCni(type, req.env, req.stdin, {
            plugin: (conf, env) => pluginOf(type, stateDirOf(conf, env), env),
            ipam: (t, env, stdin) => execIpam(t, env, stdin, ipamShell),
          });
          exitCode = out.exitCode;
          stdout = out.stdout;
        } catch (err) {
          stdout = JSON.stringify({ cniVersion: '1.0.0', code: 100, msg: err instanceof Error ? err.message : String(err) });
        }
        sock.end(`${exitCode}\n${stdout}`);
      })();
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(socketPath, () => resolve());
  });
  chmodSync(socketPath, 0o600);
  return {
    socketPath,
    close: () =>
      new Promise<void>((resolve) => {
        ipamShell.close();
        server.close(() => resolve());
        try {
          unlinkSync(socketPath);
        } catch {
          /* gone */
        }
      }),
  };
}
