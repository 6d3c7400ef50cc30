/**
 * vhost-user data-plane back ends: each creates, finds and deletes the port for one socket.
 *   - testpmd: commands on its interactive stdin (a FIFO), state read from its telemetry socket (runs here; tests use it)
 *   - vpp: `vppctl create vhost-user socket <path> [server]` (VPP is server when the VM is client)
 *   - ovs-dpdk: `ovs-vsctl add-port <br> <name> -- set Interface <name> type=dpdkvhostuserclient options:vhost-server-path=<path>`
 *     `-- set Port <name> tag=<vlan>` (the node agent's switch; its ovsdb socket, bridge and VLAN come from the node)
 */
import { addPortGuard, delPortGuard, hasPortGuard, type PortGuard } from './ovs-antispoof.js';
import { openSync, writeSync, closeSync, constants } from 'node:fs';
import { AppError, UnavailableError } from '@edgenfv/contracts';
import { mustRun, runProcess, type Runner } from '../exec.js';

export interface PortSpec {
  /** Our name for the port (VPP names its own interface; we record its name). */
  portName: string;
  socketPath: string;
  /** The VM's role: `server` means the data plane connects as a client. */
  vmMode: 'server' | 'client';
  queues: number;
  mtuBytes?: number;
  /** The port's MAC and addresses: a back end that can (OVS) lets only these leave the port (ovs-antispoof.ts). */
  guard?: PortGuard;
}

export interface VhostBackend {
  readonly kind: 'testpmd' | 'vpp' | 'ovs-dpdk';
  /** Creates the port; returns the data plane's name for it. Creating an existing port returns it. */
  createPort(spec: PortSpec): Promise<string>;
  /** True when the data plane has a port by that name. */
  hasPort(name: string): Promise<boolean>;
  /** Deletes it; a port that is not there is success. */
  deletePort(name: string): Promise<void>;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

// Node has no SOCK_SEQPACKET sockets: ask DPDK's telemetry socket through python3 (a dependency of dpdk-dev).
const TELEMETRY_PY = `
import socket, sys, json
s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
s.connect(sys.argv[1])
hello = json.loads(s.recv(1024).decode())
out = []
for c in sys.argv[2:]:
    s.send(c.encode())
    out.append(json.loads(s.recv(hello.get("max_output_len", 16384)).decode()))
print(json.dumps(out))
`;

export interface TestpmdPort {
  portId: number;
  name: string;
  started: boolean;
  mtuBytes: number;
  rxQueues: number;
}

export class TestpmdTelemetry {
  constructor(
    readonly socketPath: string,
    private readonly run: Runner = runProcess,
  ) {}
  async query(...cmds: string[]): Promise<Record<string, unknown>[]> {
    const out = await mustRun(this.run, ['python3', '-c', TELEMETRY_PY, this.socketPath, ...cmds]);
    return JSON.parse(out) as Record<string, unknown>[];
  }
  async ports(): Promise<TestpmdPort[]> {
    const [list] = await this.query('/ethdev/list');
    const ids = (list?.['/ethdev/list'] as number[] | undefined) ?? [];
    if (ids.length === 0) return [];
    const infos = await this.query(...ids.map((i) => `/ethdev/info,${i}`));
    return infos.map((r, k) => {
      const i = (r['/ethdev/info'] ?? {}) as Record<string, number | string>;
      return { portId: ids[k]!, name: String(i.name), started: i.dev_started === 1, mtuBytes: Number(i.mtu), rxQueues: Number(i.nb_rx_queues) };
    });
  }
}

export interface TestpmdOptions {
  /** testpmd's interactive stdin: a FIFO its runner keeps open for writing (so testpmd never sees EOF). */
  controlPath: string;
  /** `/var/run/dpdk/<file-prefix>/dpdk_telemetry.v2` */
  telemetryPath: string;
  timeoutMs?: number;
}

/** Port names must start with the vhost PMD's driver name. */
export function testpmdVdevName(portName: string): string {
  return portName.startsWith('net_vhost') ? portName : `net_vhost_${portName}`;
}

export class TestpmdBackend implements VhostBackend {
  readonly kind = 'testpmd' as const;
  private readonly telemetry: TestpmdTelemetry;
  constructor(
    private readonly opts: TestpmdOptions,
    run: Runner = runProcess,
  ) {
    this.telemetry = new TestpmdTelemetry(opts.telemetryPath, run);
  }

  private send(lines: string[]): void {
    let fd: number;
    try {
      fd = openSync(this.opts.controlPath, constants.O_WRONLY | constants.O_NONBLOCK);
    } catch (e) {
      throw new UnavailableError(`testpmd control ${this.opts.controlPath} is not open for reading (is testpmd running?)`, { cause: e });
    }
    try {
      writeSync(fd, lines.map((l) => `${l}\n`).join(''));
    } finally {
      closeSync(fd);
    }
  }

  private async waitFor<T>(what: string, probe: () => Promise<T | undefined>): Promise<T> {
    const deadline = Date.now() + (this.opts.timeoutMs ?? 15_000);
    for (let wait = 5; ; wait = Math.min(wait * 2, 200)) {
      const v = await probe();
      if (v !== undefined) return v;
      if (Date.now() > deadline) throw new UnavailableError(`testpmd: ${what} did not happen in time`);
      await sleep(wait);
    }
  }

  private async find(name: string): Promise<TestpmdPort | undefined> {
    return (await this.telemetry.ports()).find((p) => p.name === name);
  }

  async createPort(spec: PortSpec): Promise<string> {
    const name = testpmdVdevName(spec.portName);
    let port = await this.find(name);
    if (!port) {
      const client = spec.vmMode === 'server' ? 1 : 0;
      this.send([`port attach ${name},iface=${spec.socketPath},queues=${spec.queues},client=${client}`]);
      port = await this.waitFor(`port ${name} attach`, () => this.find(name));
    }
    if (!port.started) {
      const cmds = spec.mtuBytes !== undefined ? [`port config mtu ${port.portId} ${spec.mtuBytes}`] : [];
      this.send([...cmds, `port start ${port.portId}`]);
      await this.waitFor(`port ${name} start`, async () => ((await this.find(name))?.started ? true : undefined));
    }
    return name;
  }

  async hasPort(name: string): Promise<boolean> {
    return (await this.find(name)) !== undefined;
  }

  async deletePort(name: string): Promise<void> {
    const port = await this.find(name);
    if (!port) return;
    this.send([`port stop ${port.portId}`, `port close ${port.portId}`, `port detach ${port.portId}`]);
    await this.waitFor(`port ${name} detach`, async () => ((await this.find(name)) ? undefined : true));
  }
}

export class VppBackend implements VhostBackend {
  readonly kind = 'vpp' as const;
  constructor(
    private readonly run: Runner = runProcess,
    private readonly vppctl: readonly string[] = ['vppctl'],
  ) {}
  private ctl(...args: string[]): Promise<string> {
    return mustRun(this.run, [...this.vppctl, ...args]);
  }
  private async bySocket(): Promise<Map<string, string>> {
    // "Interface: VirtualEthernet0/0/0 (ifindex 1)" ... "socket filename /run/x.sock type server errno ..."
    const out = await this.ctl('show', 'vhost-user');
    const m = new Map<string, string>();
    let ifc: string | undefined;
    for (const line of out.split('\n')) {
      const i = /^Interface:\s+(\S+)/.exec(line.trim());
      if (i) ifc = i[1];
      const s = /socket filename\s+(\S+)/.exec(line);
      if (s && ifc) m.set(s[1]!, ifc);
    }
    return m;
  }
  async createPort(spec: PortSpec): Promise<string> {
    const existing = (await this.bySocket()).get(spec.socketPath);
    if (existing) return existing;
    const args = ['create', 'vhost-user', 'socket', spec.socketPath];
    if (spec.vmMode === 'client') args.push('server');
    const name = (await this.ctl(...args)).trim().split(/\s+/).pop();
    if (!name) throw new AppError('INTERNAL', `vppctl ${args.join(' ')} printed no interface name`);
    if (spec.mtuBytes !== undefined) await this.ctl('set', 'interface', 'mtu', 'packet', String(spec.mtuBytes), name);
    await this.ctl('set', 'interface', 'state', name, 'up');
    return name;
  }
  async hasPort(name: string): Promise<boolean> {
    return [...(await this.bySocket()).values()].includes(name);
  }
  async deletePort(name: string): Promise<void> {
    if (!(await this.hasPort(name))) return;
    await this.ctl('delete', 'vhost-user', name);
  }
}

export interface OvsDpdkTarget {
  bridge: string;
  /** Access VLAN of the port (`tag`): the network's VLAN. */
  vlan?: number;
  /** ovsdb-server of the node's switch (`unix:/path/db.sock`); default: ovs-vsctl's own default. */
  db?: string;
}

/**
 * OVS-DPDK: `dpdkvhostuserclient` ports (OVS connects to the socket the VM serves, and reconnects after a
 * switch restart). Create is `--may-exist` and then sets every column again, so repeating it (or re-creating the
 * port from its record after the switch lost its database) converges on the same port.
 */
export class OvsDpdkBackend implements VhostBackend {
  readonly kind = 'ovs-dpdk' as const;
  constructor(
    private readonly target: OvsDpdkTarget,
    private readonly run: Runner = runProcess,
  ) {}
  private vsctl(...args: string[]): string[] {
    return ['ovs-vsctl', ...(this.target.db ? [`--db=${this.target.db}`] : []), '--timeout=30', ...args];
  }
  async createPort(spec: PortSpec): Promise<string> {
    if (spec.vmMode !== 'server')
      throw new AppError('INVALID_ARGUMENT', 'mode: ovs-dpdk ports are dpdkvhostuserclient: the VM must be the vhost-user server (mode "server")');
    const name = spec.portName;
    const { bridge, vlan } = this.target;
    const iface = ['type=dpdkvhostuserclient', `options:vhost-server-path=${JSON.stringify(spec.socketPath)}`];
    if (spec.queues > 1) iface.push(`options:n_rxq=${spec.queues}`);
    if (spec.mtuBytes !== undefined) iface.push(`mtu_request=${spec.mtuBytes}`);
    const args = this.vsctl('--may-exist', 'add-port', bridge, name, '--', 'set', 'Interface', name, ...iface);
    // VLAN: an access port of the network's VLAN (tag), or untagged; set either way so a repeat converges.
    args.push('--', ...(vlan !== undefined ? ['set', 'Port', name, `tag=${vlan}`] : ['clear', 'Port', name, 'tag']));
    await mustRun(this.run, args);
    if (spec.guard) await addPortGuard(bridge, this.target.db, name, spec.guard, this.run);
    return name;
  }
  async hasPort(name: string): Promise<boolean> {
    const r = await this.run(this.vsctl('port-to-br', name));
    return r.code === 0 && r.stdout.trim() === this.target.bridge;
  }
  async deletePort(name: string): Promise<void> {
    await delPortGuard(this.target.bridge, this.target.db, name, this.run);
    await mustRun(this.run, this.vsctl('--if-exists', 'del-port', this.target.bridge, name));
  }
  /** Whether the port's anti-spoofing flows are there. */
  hasGuard(name: string): Promise<boolean> {
    return hasPortGuard(this.target.bridge, this.target.db, name, this.run);
  }
}
