/**
 * `npm run demo:migrate` (as root): live migration on a 2-node virtual site (docs/migration.md). A `builtin:vrouter`
 * VNF between the provider hosts `left` and `right` runs on node A; a ping at 10 per second goes through it;
 * `nfv.v1.admin.nodes.drain A` through the message API live-migrates the tenant VM to node B (QEMU migration; the
 * VNF stays RUNNING); the ping goes on. Last line:
 * `{"from":"...","to":"...","pingsSent":N,"pingsLost":N,"gapMs":N,"qemuDowntimeMs":N,"state":"RUNNING"}`.
 * `--echo` copies the services' logs to stderr.
 */
import { parseArgs } from 'node:util';
import { Pinger, NETS, pingOnce, startMigrateSite, type MigrateSite } from './migrate-scenario.js';

async function main(): Promise<number> {
  const { values } = parseArgs({ options: { echo: { type: 'boolean', default: false } } });
  if (process.getuid?.() !== 0) {
    console.error('demo:migrate: needs root (network namespaces, veths, bridges, QEMU isolation)');
    return 1;
  }
  const log = (m: string): void => console.log(`demo:migrate: ${m}`);
  const out = { from: '', to: '', pingsSent: 0, pingsLost: 0, gapMs: 0, qemuDowntimeMs: null as number | null, state: '' };
  let ms: MigrateSite | undefined;
  let ok: boolean;
  try {
    ms = await startMigrateSite({ log, echo: values.echo });
    const { site, tenant, vnfId, a } = ms;
    const target = `${NETS.right}.2`;
    if (!pingOnce(ms.leftNs, target)) throw new Error('no ping from left to right through the vrouter before the drain');
    const pinger = new Pinger(ms.leftNs, target);
    pinger.start();
    await new Promise((r) => setTimeout(r, 3000));
    log(`draining ${a} through the message API (nfv.v1.admin.nodes.drain)`);
    const drain = await site.api.ok<{ opOccIds: string[]; vnfs: unknown[] }>('nfv.v1.admin.nodes.drain', { id: a });
    log(`drain: ${JSON.stringify(drain.vnfs)}`);
    const op = await site.api.waitOp(tenant, drain.opOccIds[0]!, 15 * 60_000);
    for (const s of op.steps as { message: string }[]) log(`  ${s.message}`);
    if (op.operationState !== 'COMPLETED') throw new Error(`the drain's HEAL ended ${op.operationState}: ${JSON.stringify(op.error)}`);
    // the ping goes on through the VM on B
    const before = pinger.replies.length;
    await new Promise((r) => setTimeout(r, 3000));
    const after = pinger.replies.length - before;
    const p = await pinger.stop();
    const vnf = await site.api.ok(`nfv.v1.tenant.${tenant}.vnfs.get`, { id: vnfId });
    Object.assign(out, {
      from: a,
      to: vnf.replicas[0].nodeId,
      pingsSent: p.sent,
      pingsLost: p.lost,
      gapMs: p.gapMs,
      qemuDowntimeMs: typeof op.params?.qemuDowntimeMs === 'number' ? op.params.qemuDowntimeMs : null,
      state: vnf.replicas[0].state,
    });
    log(`replica ${out.state} on ${out.to}; ${after} replies in the 3 s after the drain`);
    ok = out.state === 'RUNNING' && out.to !== a && after > 0;
    const term = await site.api.ok<{ opOccId: string }>(`nfv.v1.tenant.${tenant}.vnfs.terminate`, { id: vnfId });
    log(`TERMINATE ${(await site.api.waitOp(tenant, term.opOccId, 5 * 60_000)).operationState}`);
  } finally {
    if (ms) {
      log('tearing the site down');
      const t = await ms.site.teardown();
      if (!t.clean) log(`left behind: ${t.leftovers.join(', ')}`);
    }
  }
  console.log(JSON.stringify(out));
  return ok ? 0 : 1;
}

main().then(
  (code) => process.exit(code),
  (err) => {
    console.error('demo:migrate failed:', err);
    process.exit(1);
  },
);
