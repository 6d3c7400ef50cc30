/**
 * Live migration on a virtual site (docs/migration.md), shared by `npm run demo:migrate` and
 * test/test/migrate.test.ts: a 2-node site with the tenant networks `left` and `right` carried to both nodes, the
 * provider hosts `left` and `right` on them, a `builtin:vrouter` VNF (one tap NIC in each network) placed on node A
 * (node B cordoned while it boots), routes through it, and a ping at 10 per second whose replies are time-stamped.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { startSite, type VirtualSite } from './site.js';

export const NETS = { left: '10.62.1', right: '10.62.2' } as const;

export interface MigrateSite {
  site: VirtualSite;
  tenant: string;
  vnfId: string;
  a: string;
  b: string;
  leftNs: string;
  rightNs: string;
}

export async function startMigrateSite(opts: { log?: (m: string) => void; echo?: boolean; heartbeatGraceMs?: number; tenant?: string } = {}): Promise<MigrateSite> {
  const log = opts.log ?? ((): void => undefined);
  const site = await startSite({
    nodes: 2,
    log,
    ...(opts.echo ? { echo: true } : {}),
    ...(opts.heartbeatGraceMs ? { heartbeatGraceMs: opts.heartbeatGraceMs } : {}),
    networks: [
      { name: 'left', prefix: NETS.left },
      { name: 'right', prefix: NETS.right },
    ],
  });
  try {
    await site.waitReady();
    const [a, b] = [site.nodes[0]!.id, site.nodes[1]!.id];
    const leftNs = site.addHost('left', 'left');
    const rightNs = site.addHost('right', 'right');
    const tenant = opts.tenant ?? 'mig';
    await site.api.ok('nfv.v1.admin.tenants.create', { id: tenant, quota: { vcpus: 4, vnfs: 2 } });
    // the VNF boots on A: B is cordoned until then
    await site.api.ok('nfv.v1.admin.nodes.cordon', { id: b });
    const descriptor = {
      name: 'vrouter',
      replicas: 1,
      resources: { vcpus: 1, memoryMiB: 128 },
      image: { ref: 'builtin:vrouter' },
      interfaces: [
        { name: 'west', type: 'tap', network: 'left' },
        { name: 'east', type: 'tap', network: 'right' },
      ],
    };
    log(`instantiating builtin:vrouter on ${a} (a TCG boot)`);
    const inst = await site.api.ok<{ vnfId: string; opOccId: string }>(`nfv.v1.tenant.${tenant}.vnfs.instantiate`, { descriptor });
    const op = await site.api.waitOp(tenant, inst.opOccId, 15 * 60_000);
    if (op.operationState !== 'COMPLETED') throw new Error(`instantiate ended ${op.operationState}: ${JSON.stringify(op.error)}`);
    await site.api.ok('nfv.v1.admin.nodes.uncordon', { id: b });
    const vnf = await site.api.ok(`nfv.v1.tenant.${tenant}.vnfs.get`, { id: inst.vnfId });
    const rep = vnf.replicas[0];
    const addr = (name: string): string => String(rep.interfaces.find((i: { name: string }) => i.name === name)?.ips?.[0] ?? '').split('/')[0]!;
    ip('-n', leftNs, 'route', 'replace', `${NETS.right}.0/24`, 'via', addr('west'));
    ip('-n', rightNs, 'route', 'replace', `${NETS.left}.0/24`, 'via', addr('east'));
    log(`vrouter RUNNING on ${rep.nodeId}: ${addr('west')} | ${addr('east')}`);
    return { site, tenant, vnfId: inst.vnfId, a, b, leftNs, rightNs };
  } catch (err) {
    await site.teardown();
    throw err;
  }
}

function ip(...args: string[]): void {
  const r = spawnSync('ip', args, { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`ip ${args.join(' ')}: ${r.stderr}`);
}

/** A single ping (2 s wait) from `ns` to `target`: true when answered. */
export function pingOnce(ns: string, target: string, tries = 5): boolean {
  for (let i = 0; i < tries; i++) {
    const r = spawnSync('ip', ['netns', 'exec', ns, 'busybox', 'ping', '-c', '1', '-W', '2', target], { encoding: 'utf8' });
    if (r.status === 0) return true;
  }
  return false;
}

/** `busybox ping -i 0.1` in a namespace; every reply's arrival time is kept. */
export class Pinger {
  private child: ChildProcess | undefined;
  private buf = '';
  readonly replies: { seq: number; at: number }[] = [];
  private startedAt = 0;
  private stoppedAt = 0;
  private sent = 0;

  constructor(
    private readonly ns: string,
    private readonly target: string,
  ) {}

  start(): void {
    this.startedAt = Date.now();
    this.child = spawn('ip', ['netns', 'exec', this.ns, 'busybox', 'ping', '-i', '0.1', '-W', '1', this.target], { stdio: ['ignore', 'pipe', 'pipe'] });
    this.child.stdout!.on('data', (d: Buffer) => {
      this.buf += d.toString();
      let nl: number;
      while ((nl = this.buf.indexOf('\n')) >= 0) {
        const line = this.buf.slice(0, nl);
        this.buf = this.buf.slice(nl + 1);
        const m = /seq=(\d+)/.exec(line);
        if (m) this.replies.push({ seq: Number(m[1]), at: Date.now() });
        const t = /(\d+) packets transmitted/.exec(line);
        if (t) this.sent = Number(t[1]);
      }
    });
  }

  /** Stops the ping; resolves with what it counted. gapMs: the longest time without a reply while it ran. */
  async stop(): Promise<{ sent: number; received: number; lost: number; gapMs: number }> {
    const c = this.child;
    if (c && c.exitCode === null) {
      const done = new Promise((r) => c.once('exit', r));
      c.kill('SIGINT');
      await done;
    }
    this.stoppedAt = Date.now();
    const seqs = new Set(this.replies.map((r) => r.seq));
    const sent = this.sent || (this.replies.length ? Math.max(...seqs) + 1 : 0);
    let gap = 0;
    let prev = this.replies[0]?.at ?? this.startedAt;
    for (const r of this.replies) {
      gap = Math.max(gap, r.at - prev);
      prev = r.at;
    }
    return { sent, received: seqs.size, lost: Math.max(0, sent - seqs.size), gapMs: gap };
  }

}
