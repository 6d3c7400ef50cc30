/**
 * `npm run demo:sriov` (as root; QEMU >= 8): an SR-IOV VF from the message API into a tenant VM, in an emulated
 * edge node (edge-node.ts, docs/sriov.md). The node (L1: q35 TCG + intel-iommu + igb PF with 2 VFs) runs our node
 * agent from the built tree and joins the scheduler on this host over NATS; a tenant instantiates, through the
 * API, a `builtin:busybox` VNF with one `sriov` interface on physnet1 (network `radio`); the node agent binds the
 * reserved VF to vfio-pci and boots the tenant VM (L2, nested TCG: many minutes) with the VF on its own root port;
 * the guest agent finds it by PCI path, gives it its IPAM address and reports the guest PCI address, which the API's
 * replica shows; the PF (inside the node) pings that address; terminate gives the VF back to igbvf with its MAC,
 * VLAN, spoofchk and trust as before. Last line:
 * `{"vfPciAddress":"...","guestPciAddress":"...","foundBy":"pci","pingsSent":N,"pingsReceived":N,"restored":true}`.
 * `--echo` copies L1's console; EDGENFV_DEMO_OP_TIMEOUT_MIN (default 90) bounds the instantiate.
 */
import { parseArgs } from 'node:util';
import { startEdgeNode, type EdgeNode, type VfTableEntry } from './edge-node.js';

const NETWORK = { name: 'radio', cidr: '10.79.0.0/24', gateway: '10.79.0.1', range: { start: '10.79.0.10', end: '10.79.0.50' }, spoofchk: true, trust: false };

interface Out {
  vfPciAddress: string;
  guestPciAddress: string;
  foundBy: string;
  pingsSent: number;
  pingsReceived: number;
  restored: boolean;
}

function sameVf(a: VfTableEntry | undefined, b: VfTableEntry | undefined): boolean {
  return !!a && !!b && a.mac === b.mac && a.vlan === b.vlan && a.spoofchk === b.spoofchk && a.trust === b.trust && a.driver === b.driver;
}

async function main(): Promise<number> {
  const { values } = parseArgs({ options: { echo: { type: 'boolean', default: false } } });
  if (process.getuid?.() !== 0) {
    console.error('demo:sriov: needs root (a tap, nats-server on its address, QEMU)');
    return 1;
  }
  const t0 = Date.now();
  const log = (m: string): void => console.log(`demo:sriov: [${((Date.now() - t0) / 1000).toFixed(0)} s] ${m}`);
  const out: Out = { vfPciAddress: '', guestPciAddress: '', foundBy: 'none', pingsSent: 0, pingsReceived: 0, restored: false };
  const timings: Record<string, number> = {};
  let node: EdgeNode | undefined;
  let ok = false;
  try {
    // Ctrl-C: the node (and every VM in it), the tap, NATS and the scheduler go
    const onSignal = (): void => {
      log('interrupted: tearing the node down');
      void (node ? node.teardown() : Promise.resolve()).finally(() => process.exit(130));
    };
    process.once('SIGINT', onSignal);
    process.once('SIGTERM', onSignal);
    node = await startEdgeNode({ networks: [NETWORK], pfAddress: '10.79.0.1/24', log, echo: values.echo, testpmd: false });
    await node.waitReady();
    timings.nodeReadyS = Math.round((Date.now() - t0) / 1000);
    const info = await node.api.ok<{ inventory: { sriovPfs: Array<{ pciAddress: string; physnet?: string; numVfs: number; vfs: Array<{ pciAddress: string; driver?: string; iommuGroup?: number }> }> } }>('nfv.v1.admin.nodes.get', { id: node.nodeId });
    for (const pf of info.inventory.sriovPfs) log(`node ${node.nodeId}: PF ${pf.pciAddress} on ${pf.physnet ?? '-'}, VFs ${pf.vfs.map((v) => `${v.pciAddress}(${v.driver ?? '-'}, group ${v.iommuGroup ?? '?'})`).join(' ')}`);
    const before = await node.vfTable();

    const t = 'radio';
    await node.api.ok('nfv.v1.admin.tenants.create', { id: t });
    const descriptor = {
      name: 'du',
      replicas: 1,
      resources: { vcpus: 1, memoryMiB: 128 },
      image: { ref: 'builtin:busybox' },
      interfaces: [{ name: 'up', type: 'sriov', physnet: 'physnet1', network: NETWORK.name }],
    };
    log('instantiating a builtin:busybox VNF with one sriov interface on physnet1 (the tenant VM is a nested TCG boot: many minutes)');
    const tInst = Date.now();
    const inst = await node.api.ok<{ vnfId: string; opOccId: string }>(`nfv.v1.tenant.${t}.vnfs.instantiate`, { descriptor });
    const opTimeout = Number(process.env.EDGENFV_DEMO_OP_TIMEOUT_MIN ?? 90) * 60_000;
    // while the VM boots: the VF on vfio-pci (the node agent's SR-IOV attachment), seen in the node's sysfs
    let boundSeen = false;
    const watch = (async () => {
      while (!boundSeen && Date.now() - tInst < opTimeout) {
        const now = await node!.vfTable().catch(() => []);
        const bound = now.find((v) => v.driver === 'vfio-pci');
        if (bound) {
          boundSeen = true;
          timings.vfBoundS = Math.round((Date.now() - tInst) / 1000);
          log(`VF ${bound.pciAddress} (vf ${bound.vf}) on vfio-pci, MAC ${bound.mac}, VLAN ${bound.vlan}, spoofchk ${bound.spoofchk}, trust ${bound.trust}`);
        }
        await new Promise((r) => setTimeout(r, 3000));
      }
    })();
    const op = await node.api.waitOp(t, inst.opOccId, opTimeout);
    boundSeen = true;
    await watch;
    timings.instantiateS = Math.round((Date.now() - tInst) / 1000);
    log(`INSTANTIATE ${op.operationState} after ${timings.instantiateS} s${op.error ? `: ${op.error.code} ${op.error.message}` : ''}`);
    const vnf = await node.api.ok<{ replicas: Array<{ state: string; nodeId?: string; interfaces: Array<{ name: string; mac?: string; ips: string[]; pciAddress?: string; guestPciAddress?: string }> }> }>(`nfv.v1.tenant.${t}.vnfs.get`, { id: inst.vnfId });
    const rep = vnf.replicas[0];
    const up = rep?.interfaces.find((i) => i.name === 'up');
    log(`replica: ${rep?.state} on ${rep?.nodeId}; up: ${JSON.stringify(up)}`);
    out.vfPciAddress = up?.pciAddress ?? '';
    out.guestPciAddress = up?.guestPciAddress ?? '';
    // the node agent gives a VF to the guest agent as a PCI path (root port slot/function), never by MAC; the guest
    // reports the address that path resolved to: a reported guest address is a VF found by PCI path
    out.foundBy = out.guestPciAddress ? 'pci' : 'none';
    if (rep?.state === 'RUNNING' && up?.ips[0]) {
      const ip = up.ips[0].split('/')[0]!;
      const during = (await node.vfTable()).find((v) => v.pciAddress === out.vfPciAddress);
      log(`VF ${out.vfPciAddress} during: driver ${during?.driver}, MAC ${during?.mac}`);
      // the guest's own view: the VF's sysfs path behind root port 00:10.0 and its netdev (vnfs.exec in the VNF)
      const ex = await node.api.call(`nfv.v1.tenant.${t}.vnfs.exec`, { id: inst.vnfId, command: ['sh', '-c', `readlink -f /sys/bus/pci/devices/${out.guestPciAddress}; ls /sys/bus/pci/devices/${out.guestPciAddress}/net; ip -o -4 addr`], timeoutMs: 120_000 }, 600_000).catch((e: Error) => ({ ok: false, error: { message: e.message } }));
      log(`in the guest: ${ex.ok ? JSON.stringify(ex.result.stdout ?? ex.result).slice(0, 600) : `exec failed: ${ex.error?.message}`}`);
      log(`ping ${ip} from the PF inside the node`);
      const ping = await node.exec(['busybox', 'ping', '-c', '5', '-W', '10', ip], 300_000);
      const m = /(\d+) packets transmitted, (\d+) packets received/.exec(ping.stdout);
      out.pingsSent = Number(m?.[1] ?? 0);
      out.pingsReceived = Number(m?.[2] ?? 0);
      log(`ping: ${out.pingsReceived}/${out.pingsSent} answered`);
    }
    // an instantiate that did not complete (FAILED_TEMP) still holds the VNF: a FORCEFUL terminate takes over from it
    const term = await node.api.ok<{ opOccId: string }>(`nfv.v1.tenant.${t}.vnfs.terminate`, { id: inst.vnfId, ...(op.operationState === 'COMPLETED' ? {} : { mode: 'FORCEFUL' }) });
    const top = await node.api.waitOp(t, term.opOccId, 20 * 60_000);
    log(`TERMINATE ${top.operationState}`);
    // the VF back on igbvf with the settings it had before (the driver re-probes asynchronously)
    let after: VfTableEntry[] = [];
    for (let i = 0; i < 60; i++) {
      after = await node.vfTable();
      const vf = after.find((v) => v.pciAddress === out.vfPciAddress);
      if (vf?.driver === 'igbvf') break;
      await new Promise((r) => setTimeout(r, 2000));
    }
    const b = before.find((v) => v.pciAddress === out.vfPciAddress);
    const a = after.find((v) => v.pciAddress === out.vfPciAddress);
    log(`VF ${out.vfPciAddress} before ${JSON.stringify(b)} after ${JSON.stringify(a)}`);
    out.restored = sameVf(b, a);
    ok = op.operationState === 'COMPLETED' && out.foundBy === 'pci' && out.pingsSent > 0 && out.pingsReceived === out.pingsSent && out.restored;
    log(`timings: ${JSON.stringify({ ...timings, l1: node.marks })}`);
  } finally {
    if (node) {
      if (!ok) {
        log(`node agent log (tail):\n${await node.agentLog(40).catch(() => '(unavailable)')}`);
        log(`L1 console (tail):\n${node.console.slice(-20).join('\n')}`);
      }
      log('tearing the node down');
      const td = await node.teardown();
      if (!td.clean) log(`left behind: ${td.leftovers.join(', ')}`);
    }
  }
  console.log(JSON.stringify(out));
  return ok ? 0 : 1;
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    console.error('demo:sriov failed:', err instanceof Error ? err.message : err);
    process.exit(1);
  },
);
