/**
 * `npm run demo:site -- --nodes 3` (as root): a virtual edge site on this machine (site.ts, docs/site.md): N real
 * node agents in their own network namespaces, the scheduler and NATS on the host. Shows every node Ready through
 * `nodes.list`, instantiates one `builtin:busybox` VNF with a replica per node and `placement.antiAffinity: node`
 * (each replica boots its tenant VM on its own node agent, under TCG here), terminates it, tears the site down and
 * prints as its last line `{"nodes":N,"ready":N,"placedOnDistinctNodes":N,"running":N,"teardownClean":true}`.
 * `--no-vnf` skips the VNF (no VM boot). `--keep` skips it too and keeps the site up until Ctrl-C, with an operator
 * connect file for the `edgenfv` CLI (EDGENFV_CONNECT=<site dir>/connect.json).
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { startSite, type VirtualSite } from './site.js';

async function main(): Promise<number> {
  const { values } = parseArgs({ options: { nodes: { type: 'string', default: '3' }, keep: { type: 'boolean', default: false }, 'no-vnf': { type: 'boolean', default: false }, echo: { type: 'boolean', default: false } } });
  const n = Number(values.nodes);
  if (!Number.isInteger(n) || n < 1 || n > 16) {
    console.error(`demo:site: --nodes: an integer from 1 to 16, not ${JSON.stringify(values.nodes)}`);
    return 2;
  }
  if (process.getuid?.() !== 0) {
    console.error('demo:site: needs root (network namespaces, veths, a bridge, QEMU isolation)');
    return 1;
  }
  const log = (m: string): void => console.log(`demo:site: ${m}`);
  const out = { nodes: n, ready: 0, placedOnDistinctNodes: 0, running: 0, teardownClean: false };
  let site: VirtualSite | undefined;
  let ok: boolean;
  try {
    site = await startSite({ nodes: n, log, echo: values.echo });
    await site.waitReady();
    const list = await site.api.ok<{ items: { id: string; health: string }[] }>('nfv.v1.admin.nodes.list');
    const ours = list.items.filter((x) => site!.nodes.some((s) => s.id === x.id));
    out.ready = ours.filter((x) => x.health === 'Ready').length;
    for (const x of ours) log(`node ${x.id}: ${x.health}`);
    if (values.keep) {
      // the site stays up for the user's own commands until Ctrl-C
      const file = join(site.dir, 'connect.json');
      writeFileSync(file, JSON.stringify(site.connect, null, 2) + '\n', { mode: 0o600 });
      log(`the site is up; in another terminal: EDGENFV_CONNECT=${file} npx edgenfv nodes list`);
      log('Ctrl-C tears it down');
      await new Promise<void>((r) => {
        process.once('SIGINT', () => r());
        process.once('SIGTERM', () => r());
      });
    } else if (!values['no-vnf']) {
      const t = 'site';
      await site.api.ok('nfv.v1.admin.tenants.create', { id: t });
      const descriptor = {
        name: 'spread',
        replicas: n,
        placement: { antiAffinity: 'node' },
        resources: { vcpus: 1, memoryMiB: 128 },
        image: { ref: 'builtin:busybox' },
      };
      log(`instantiating ${n} builtin:busybox replica(s) with antiAffinity: node (one TCG VM boot per node: minutes)`);
      const inst = await site.api.ok<{ vnfId: string; opOccId: string }>(`nfv.v1.tenant.${t}.vnfs.instantiate`, { descriptor });
      const op = await site.api.waitOp(t, inst.opOccId, 20 * 60_000);
      log(`INSTANTIATE ${op.operationState}`);
      const vnf = await site.api.ok<{ replicas: { nodeId: string; state: string }[] }>(`nfv.v1.tenant.${t}.vnfs.get`, { id: inst.vnfId });
      for (const [i, r] of vnf.replicas.entries()) log(`replica ${i}: ${r.state} on ${r.nodeId}`);
      const onSite = vnf.replicas.filter((r) => site!.nodes.some((s) => s.id === r.nodeId));
      out.placedOnDistinctNodes = new Set(onSite.map((r) => r.nodeId)).size;
      out.running = onSite.filter((r) => r.state === 'RUNNING').length;
      const term = await site.api.ok<{ opOccId: string }>(`nfv.v1.tenant.${t}.vnfs.terminate`, { id: inst.vnfId });
      log(`TERMINATE ${(await site.api.waitOp(t, term.opOccId, 5 * 60_000)).operationState}`);
    }
    ok = out.ready === n && (values['no-vnf'] || values.keep || (out.placedOnDistinctNodes === n && out.running === n));
  } finally {
    if (site) {
      log('tearing the site down');
      const t = await site.teardown();
      out.teardownClean = t.clean;
      if (!t.clean) log(`left behind: ${t.leftovers.join(', ')}`);
    }
  }
  console.log(JSON.stringify(out));
  return ok && out.teardownClean ? 0 : 1;
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    console.error('demo:site failed:', err instanceof Error ? err.message : err);
    process.exit(1);
  },
);
