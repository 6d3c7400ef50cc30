/**
 * The CNI 1.0 contract around the attachment plugins: CNI_COMMAND ADD/DEL/CHECK/VERSION (and 1.1's GC, STATUS),
 * network config on stdin, result or error JSON on stdout, CNI error codes. IPAM is delegated to the plugin named by
 * `ipam.type` (found on CNI_PATH), as the reference plugins do; `runtimeConfig.ips`/`runtimeConfig.mac` are honoured.
 */
import { spawn } from 'node:child_process';
import { accessSync, constants } from 'node:fs';
import { delimiter, join } from 'node:path';
import { AppError, InvalidArgumentError, type AttachmentIp, type AttachmentResult, type AttachmentType } from '@edgenfv/contracts';
import { isObj, type AttachCtx } from '../config.js';
import type { ShellRunner } from '../exec.js';
import type { AttachmentPlugin } from '../plugin.js';

export const SUPPORTED_VERSIONS = ['1.0.0', '1.1.0'] as const;

/** CNI well-known error codes (SPEC.md, "Error"). */
export const CniCode = {
  IncompatibleVersion: 1,
  UnsupportedField: 2,
  ContainerUnknown: 3,
  InvalidEnv: 4,
  IoFailure: 5,
  DecodeFailure: 6,
  InvalidConfig: 7,
  TryAgainLater: 11,
  PluginInternal: 100,
} as const;

export class CniError extends Error {
  constructor(
    readonly code: number,
    msg: string,
    readonly details?: string,
  ) {
    super(msg);
  }
}

export interface CniOutput {
  stdout: string;
  exitCode: number;
}

/** The fields of a network config that belong to CNI itself, not to the plugin. */
const CNI_KEYS = ['cniVersion', 'cniVersions', 'name', 'type', 'ipam', 'dns', 'args', 'runtimeConfig', 'capabilities', 'prevResult', 'stateDir', 'disableCheck', 'disableGC', 'cni.dev/valid-attachments', 'cni.dev/attachments'];

export interface CniIpamResult {
  ips?: Array<{ address: string; gateway?: string }>;
  routes?: Array<{ dst: string; gw?: string }>;
  dns?: unknown;
}

/** Runs the IPAM plugin `type` from CNI_PATH with the same environment and config. */
export async function execIpam(type: string, env: NodeJS.ProcessEnv, stdin: string, shell?: ShellRunner): Promise<CniIpamResult | null> {
  if (!/^[A-Za-z0-9_.-]+$/.test(type)) throw new CniError(CniCode.InvalidConfig, `ipam.type: not a plugin name: ${JSON.stringify(type)}`);
  const dirs = (env.CNI_PATH ?? '').split(delimiter).filter(Boolean);
  let bin: string | undefined;
  for (const d of dirs) {
    try {
      accessSync(join(d, type), constants.X_OK);
      bin = join(d, type);
      break;
    } catch {
      /* next */
    }
  }
  if (!bin) throw new CniError(CniCode.InvalidConfig, `ipam.type: plugin ${type} not found on CNI_PATH (${dirs.join(':') || 'empty'})`);
  const cniEnv: Record<string, string | undefined> = {};
  for (const [k, v] of Object.entries(env)) if (k.startsWith('CNI_')) cniEnv[k] = v;
  const r = shell
    ? await shell.runWith([bin], stdin, { env: cniEnv, discardStderr: true }).then((x) => ({ code: x.code, out: x.stdout }))
    : await new Promise<{ code: number | null; out: string }>((resolve, reject) => {
    const p = spawn(bin, [], { env, stdio: ['pipe', 'pipe', 'inherit'] });
    let out = '';
    p.stdout.on('data', (b: Buffer) => (out += b.toString()));
    p.on('error', reject);
    p.on('close', (code) => resolve({ code, out }));
    p.stdin.end(stdin);
  });
  if (r.code !== 0) {
    let e: { code?: number; msg?: string; details?: string } = {};
    try {
      e = JSON.parse(r.out) as typeof e;
    } catch {
      /* not JSON */
    }
    throw new CniError(e.code ?? CniCode.PluginInternal, `ipam ${type}: ${e.msg ?? r.out.trim()}`, e.details);
  }
  return r.out.trim() ? (JSON.parse(r.out) as CniIpamResult) : null;
}

function toCniError(err: unknown): CniError {
  if (err instanceof CniError) return err;
  if (err instanceof InvalidArgumentError) return new CniError(CniCode.InvalidConfig, err.message, JSON.stringify(err.issues));
  if (err instanceof AppError) {
    if (err.code === 'NOT_FOUND' && /^netns /.test(err.message)) return new CniError(CniCode.ContainerUnknown, err.message);
    if (err.code === 'NOT_FOUND' || err.code === 'INVALID_ARGUMENT') return new CniError(CniCode.InvalidConfig, err.message);
    if (err.retryable) return new CniError(CniCode.TryAgainLater, err.message);
    return new CniError(CniCode.PluginInternal, err.message, err.code);
  }
  return new CniError(CniCode.PluginInternal, err instanceof Error ? err.message : String(err));
}

export function cniResult(version: string, r: AttachmentResult, netns: string | undefined): Record<string, unknown> {
  const iface: Record<string, unknown> = { name: r.ifName, mac: r.mac };
  if (netns && (r.kind === 'tap' || r.kind === 'macvtap')) iface.sandbox = netns;
  if (r.mtuBytes !== undefined) iface.mtu = r.mtuBytes;
  if (version === '1.1.0') {
    if (r.kind === 'sriov') iface.pciID = r.pciAddress;
    if (r.kind === 'vhostuser') iface.socketPath = r.socketPath;
  }
  const out: Record<string, unknown> = {
    cniVersion: version,
    interfaces: [iface],
    ips: r.ips.map((ip) => ({ ...ip, interface: 0 })),
  };
  return out;
}

export interface CniRunOptions {
  /** Builds the plugin for this invocation (state dir, ports) from the network config and environment. */
  plugin: (conf: Record<string, unknown>, env: NodeJS.ProcessEnv) => AttachmentPlugin<unknown, AttachmentResult>;
  ipam?: typeof execIpam;
}

/** One CNI invocation; never throws: errors become CNI error JSON with exit code 1. */
export async function runCni(type: AttachmentType, env: NodeJS.ProcessEnv, stdin: string, opts: CniRunOptions): Promise<CniOutput> {
  let version = '1.0.0';
  try {
    const cmd = env.CNI_COMMAND;
    if (cmd === 'VERSION') return { stdout: JSON.stringify({ cniVersion: '1.0.0', supportedVersions: SUPPORTED_VERSIONS }), exitCode: 0 };
    if (!cmd || !['ADD', 'DEL', 'CHECK', 'GC', 'STATUS'].includes(cmd)) throw new CniError(CniCode.InvalidEnv, `CNI_COMMAND: unknown command ${JSON.stringify(cmd ?? '')}`);
    let conf: unknown;
    try {
      conf = JSON.parse(stdin);
    } catch (e) {
      throw new CniError(CniCode.DecodeFailure, `network config on stdin is not JSON: ${(e as Error).message}`);
    }
    if (!isObj(conf)) throw new CniError(CniCode.DecodeFailure, 'network config on stdin must be a JSON object');
    if (typeof conf.cniVersion === 'string') version = conf.cniVersion;
    const problems: string[] = [];
    if (typeof conf.cniVersion !== 'string') problems.push('cniVersion: is required');
    if (typeof conf.name !== 'string' || !conf.name) problems.push('name: is required');
    if (typeof conf.cniVersion === 'string' && !(SUPPORTED_VERSIONS as readonly string[]).includes(conf.cniVersion))
      throw new CniError(CniCode.IncompatibleVersion, `cniVersion ${conf.cniVersion} is not supported (supported: ${SUPPORTED_VERSIONS.join(', ')})`);
    if (problems.length) throw new CniError(CniCode.InvalidConfig, problems.join('; '));
    if (cmd === 'STATUS') return { stdout: '', exitCode: 0 };

    const plugin = opts.plugin(conf, env);
    const pluginRaw: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(conf)) if (!CNI_KEYS.includes(k)) pluginRaw[k] = v;
    const rc = isObj(conf.runtimeConfig) ? conf.runtimeConfig : {};
    if (typeof rc.mac === 'string' && pluginRaw.mac === undefined) pluginRaw.mac = rc.mac;
    if (Array.isArray(rc.ips) && pluginRaw.ips === undefined) pluginRaw.ips = (rc.ips as unknown[]).map((a) => ({ address: a }));
    if (typeof rc.deviceID === 'string' && pluginRaw.deviceID === undefined && type === 'sriov') pluginRaw.deviceID = rc.deviceID;

    if (cmd === 'GC') {
      const list = conf['cni.dev/valid-attachments'];
      const valid = new Set<string>();
      if (Array.isArray(list)) for (const a of list) if (isObj(a)) valid.add(`${String(a.containerID)}/${String(a.ifname)}`);
      await plugin.gc(valid);
      return { stdout: '', exitCode: 0 };
    }

    const envIssues: string[] = [];
    if (!env.CNI_CONTAINERID) envIssues.push('CNI_CONTAINERID is required');
    if (!env.CNI_IFNAME) envIssues.push('CNI_IFNAME is required');
    if (cmd === 'ADD' && (type === 'tap' || type === 'macvtap') && !env.CNI_NETNS) envIssues.push('CNI_NETNS is required');
    if (envIssues.length) throw new CniError(CniCode.InvalidEnv, envIssues.join('; '));
    const ctx: AttachCtx = { containerId: env.CNI_CONTAINERID!, ifName: env.CNI_IFNAME! };
    if (env.CNI_NETNS) ctx.netns = env.CNI_NETNS;
    const ipamType = isObj(conf.ipam) && typeof conf.ipam.type === 'string' ? conf.ipam.type : undefined;
    const ipam = opts.ipam ?? execIpam;

    if (cmd === 'ADD') {
      const cfgNoIps = plugin.parseConfig(pluginRaw); // config errors before any effect (also before the IPAM)
      let cfg = cfgNoIps;
      const done = plugin.existing(ctx);
      if (done) {
        // ADD again: the same result, without asking the IPAM for a second address
        const r = await plugin.add(ctx, plugin.parseConfig({ ...pluginRaw, ips: done.ips }));
        return { stdout: JSON.stringify(cniResult(version, r, ctx.netns)), exitCode: 0 };
      }
      if (ipamType) {
        const res = await ipam(ipamType, env, stdin);
        const ips: AttachmentIp[] = (res?.ips ?? []).map((i) => (i.gateway ? { address: i.address, gateway: i.gateway } : { address: i.address }));
        cfg = plugin.parseConfig({ ...pluginRaw, ips });
      }
      try {
        const r = await plugin.add(ctx, cfg);
        return { stdout: JSON.stringify(cniResult(version, r, ctx.netns)), exitCode: 0 };
      } catch (err) {
        if (ipamType) await ipam(ipamType, { ...env, CNI_COMMAND: 'DEL' }, stdin).catch(() => undefined);
        throw err;
      }
    }
    if (cmd === 'DEL') {
      await plugin.del(ctx);
      if (ipamType) await ipam(ipamType, env, stdin);
      return { stdout: '', exitCode: 0 };
    }
    // CHECK
    if (!isObj(conf.prevResult)) throw new CniError(CniCode.InvalidConfig, 'prevResult: is required for CHECK');
    plugin.parseConfig(pluginRaw);
    const prevIf = Array.isArray(conf.prevResult.interfaces) ? (conf.prevResult.interfaces as unknown[]).find((i) => isObj(i) && i.name === ctx.ifName) : undefined;
    const prev = isObj(prevIf) ? ({ ifName: ctx.ifName, ...(typeof prevIf.mac === 'string' ? { mac: prevIf.mac } : {}) } as unknown as AttachmentResult) : undefined;
    if (!prev) throw new CniError(CniCode.InvalidConfig, `prevResult: has no interface named ${ctx.ifName}`);
    await plugin.check(ctx, prev);
    if (ipamType) await ipam(ipamType, env, stdin);
    return { stdout: '', exitCode: 0 };
  } catch (err) {
    const e = toCniError(err);
    const body: Record<string, unknown> = { cniVersion: version, code: e.code, msg: e.message };
    if (e.details) body.details = e.details;
    return { stdout: JSON.stringify(body), exitCode: 1 };
  }
}
