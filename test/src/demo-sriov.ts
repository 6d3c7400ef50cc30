/**
 * `npm run demo:sriov` (as root; QEMU >= 8): an SR-IOV VF from the message API into a tenant VM, in an emulated
 * edge node (edge-node.ts, docs/sriov.md). The node (L1: q35 TCG + intel-iommu + igb PF with 2 VFs) runs our node
 * agent from the built tree and joins the scheduler on this host over NATS; a tenant instantiates, through the
 * API, a `builtin:busybox` VNF with one `sriov` interface on physnet1 (network `radio`); the node agent binds the
 * reserved VF to vfio-pci and boots the tenant VM (L2, nested TCG: many minutes) with the VF on its own root port;
 * the guest agent finds it by PCI path, gives it its IPAM address and reports the guest PCI address, which the API's
 * replica shows; the PF (inside the node) pings that address; terminate gives the VF back to igbvf with its MAC,
 * VLAN, spoofchk and trust as before. Then (unless --no-hotplug) a second VNF of the same tenant takes the other VF:
 * it joins the running tenant VM, so its VF is hot-plugged (QMP device_add on a spare root port), found by its PCI
 * path and pinged the same way. Last line:
 * `{"vfPciAddress":"...","guestPciAddress":"...","foundBy":"pci","pingsSent":N,"pingsReceived":N,"restored":true,
 * "hotplug":{"vfPciAddress":"...","guestPciAddress":"...","pingsSent":N,"pingsReceived":N,"restored":true}}`.
 * `--dpdk` instead: the VNF is builtin:testpmd with `resources.dataplane: {kind: dpdk}` on the VF: the tenant VM gets
 * a virtual IOMMU, the guest binds the VF to vfio-pci, testpmd (igbvf's PMD) answers the PF's pings (icmpecho), also
 * for an address nobody holds (which the guest kernel never would): `"dpdk":true` in the last line.
 * `--warm` instead: the node keeps a warm pool of one idle VM of the VNF's size (node config `warmPool`, snapshot boot
 * off); the instantiate claims it and the VF is hot-plugged into it (no tenant VM boot): `"warm":{"claimed":true,...}`.
 * `--echo` copies L1's console; EDGENFV_DEMO_OP_TIMEOUT_MIN (default 90) bounds each instantiate.
 */
import { parseArgs } from 'node:util';
import { startEdgeNode, type EdgeNode, type VfTableEntry } from './edge-node.js';

const NETWORK = { name: 'radio', cidr: '10.79.0.0/24', gateway: '10.79.0.1', range: { start: '10.79.0.10', end: '10.79.0.50' }, spoofchk: true, trust: false };
/** An address of the network outside the IPAM range and not the PF's: nobody's. */
const FOREIGN_ADDRESS = '10.79.0.250';

interface Out {
  vfPciAddress: string;
  guestPciAddress: string;
  foundBy: string;
  pingsSent: number;
  pingsReceived: number;
  restored: boolean;
  /** --dpdk: the VF answered for an address nobody holds (testpmd's icmpecho; the guest kernel answers only its own). */
  dpdk?: boolean;
  /** --warm: the replica's sandbox is the pool VM that was ready before the instantiate (its VF hot-plugged). */
  warm?: { claimed: boolean; poolVm: string; sandboxId: string; poolReadyS: number; instantiateS: number };
  /** The second VNF's VF, hot-plugged into the running tenant VM (without --no-hotplug). */
  hotplug?: { vfPciAddress: string; guestPciAddress: string; pingsSent: number; pingsReceived: number; restored: boolean };
}
interface ReplicaIf {
  name: string;
  mac?: string;
  ips: string[];
  pciAddress?: string;
  guestPciAddress?: string;
}

function sameVf(a: VfTableEntry | undefined, b: VfTableEntry | undefined): boolean {
  return !!a && !!b && a.mac === b.mac && a.vlan === b.vlan && a.spoofchk === b.spoofchk && a.trust === b.trust && a.driver === b.driver;
}

async function main(): Promise<number> {
  const { values } = parseArgs({ options: { echo: { type: 'boolean', default: false }, hotplug: { type: 'boolean', default: true }, dpdk: { type: 'boolean', default: false }, warm: { type: 'boolean', default: false } }, allowNegative: true });
  if (values.warm && values.dpdk) {
    console.error('demo:sriov: --warm and --dpdk do not go together (a vfio-pci data plane in the guest needs a vIOMMU, which pool VMs lack: it boots its own VM)');
    return 2;
  }
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
    // two L1 vCPUs (and 2 vCPUs per VM in its node agent): the second VNF's vCPU joins the tenant VM (hot-plug), and
    // --dpdk's testpmd needs two lcores; --dpdk: the image carries DPDK
    // --warm: one pool VM of the busybox VNF's size, booted (not restored: a snapshot template would be 0.6 GiB of L1's
    // RAM) as soon as the node is up
    const nodeConfig = values.warm ? { warmPool: [{ vcpus: 1, memoryMiB: 128, count: 1 }], warmPoolCpuBudgetPercent: 100, guest: { snapshotBoot: false } } : undefined;
    node = await startEdgeNode({ networks: [NETWORK], pfAddress: '10.79.0.1/24', log, echo: values.echo, testpmd: values.dpdk, cpus: 2, ...(values.dpdk ? { vmBaseMemoryMiB: 384 } : {}), ...(nodeConfig ? { nodeConfig } : {}) });
    await node.waitReady();
    timings.nodeReadyS = Math.round((Date.now() - t0) / 1000);
    let poolVm = '';
    if (values.warm) {
      log('waiting for the node\'s warm pool VM (a nested boot: many minutes)');
      const until = Date.now() + Number(process.env.EDGENFV_DEMO_OP_TIMEOUT_MIN ?? 90) * 60_000;
      for (;;) {
        const n = await node.api.ok<{ inventory: { warmPool?: Array<{ ready: number; booting: number; readyVms: string[] }> } }>('nfv.v1.admin.nodes.get', { id: node.nodeId });
        const wp = n.inventory.warmPool?.[0];
        if (wp && wp.ready > 0) {
          poolVm = wp.readyVms[0]!;
          break;
        }
        if (Date.now() > until) throw new Error(`no warm pool VM ready after ${Math.round((Date.now() - t0) / 1000)} s: ${JSON.stringify(n.inventory.warmPool)}`);
        await new Promise((r) => setTimeout(r, 10_000));
      }
      timings.poolReadyS = Math.round((Date.now() - t0) / 1000);
      log(`warm pool VM ${poolVm} ready`);
    }
    const info = await node.api.ok<{ inventory: { sriovPfs: Array<{ pciAddress: string; physnet?: string; numVfs: number; vfs: Array<{ pciAddress: string; driver?: string; iommuGroup?: number }> }> } }>('nfv.v1.admin.nodes.get', { id: node.nodeId });
    for (const pf of info.inventory.sriovPfs) log(`node ${node.nodeId}: PF ${pf.pciAddress} on ${pf.physnet ?? '-'}, VFs ${pf.vfs.map((v) => `${v.pciAddress}(${v.driver ?? '-'}, group ${v.iommuGroup ?? '?'})`).join(' ')}`);
    const before = await node.vfTable();

    const t = 'radio';
    await node.api.ok('nfv.v1.admin.tenants.create', { id: t });
    const opTimeout = Number(process.env.EDGENFV_DEMO_OP_TIMEOUT_MIN ?? 90) * 60_000;
    const api = node.api;
    const edge = node;

    /** Instantiates a builtin:busybox VNF with one sriov interface on physnet1; its replica's `up` interface. */
    const instantiate = async (name: string): Promise<{ vnfId: string; completed: boolean; boundPci: string; up?: ReplicaIf; state?: string; sandboxId?: string }> => {
      const descriptor = {
        name,
        replicas: 1,
        interfaces: [{ name: 'up', type: 'sriov', physnet: 'physnet1', network: NETWORK.name }],
        // --dpdk: DPDK on the VF in the guest (vfio-pci behind the tenant VM's vIOMMU, igbvf's PMD net_e1000_igb_vf);
        // testpmd's icmpecho engine answers ARP and ping on the VF's MAC for the replica's address
        ...(values.dpdk
          ? {
              resources: { vcpus: 2, memoryMiB: 512, dataplane: { kind: 'dpdk' } },
              image: { ref: 'builtin:testpmd' },
              env: { EDGENFV_TESTPMD_ARGS: '--forward-mode=icmpecho', EDGENFV_TESTPMD_MBUFS: '2048', EDGENFV_STATS_PERIOD: '30' },
            }
          : { resources: { vcpus: 1, memoryMiB: 128 }, image: { ref: 'builtin:busybox' }, command: ['sleep', '86400'] }),
      };
      const tInst = Date.now();
      const inst = await api.ok<{ vnfId: string; opOccId: string }>(`nfv.v1.tenant.${t}.vnfs.instantiate`, { descriptor });
      const boundBefore = new Set((await edge.vfTable()).filter((v) => v.driver === 'vfio-pci').map((v) => v.pciAddress));
      // while the node works: the reserved VF on vfio-pci (the node agent's SR-IOV attachment), seen in the node's sysfs
      let boundSeen = false;
      let boundPci = '';
      const watch = (async () => {
        while (!boundSeen && Date.now() - tInst < opTimeout) {
          const now = await edge.vfTable().catch(() => []);
          const bound = now.find((v) => v.driver === 'vfio-pci' && !boundBefore.has(v.pciAddress));
          if (bound) {
            boundSeen = true;
            boundPci = bound.pciAddress;
            timings[`${name}VfBoundS`] = Math.round((Date.now() - tInst) / 1000);
            log(`${name}: VF ${bound.pciAddress} (vf ${bound.vf}) on vfio-pci, MAC ${bound.mac}, VLAN ${bound.vlan}, spoofchk ${bound.spoofchk}, trust ${bound.trust}`);
          }
          await new Promise((r) => setTimeout(r, 3000));
        }
      })();
      const op = await api.waitOp(t, inst.opOccId, opTimeout);
      boundSeen = true;
      await watch;
      timings[`${name}InstantiateS`] = Math.round((Date.now() - tInst) / 1000);
      log(`${name}: INSTANTIATE ${op.operationState} after ${timings[`${name}InstantiateS`]} s${op.error ? `: ${op.error.code} ${op.error.message}` : ''}`);
      const vnf = await api.ok<{ replicas: Array<{ state: string; nodeId?: string; sandboxId?: string; interfaces: ReplicaIf[] }> }>(`nfv.v1.tenant.${t}.vnfs.get`, { id: inst.vnfId });
      const rep = vnf.replicas[0];
      const up = rep?.interfaces.find((i) => i.name === 'up');
      log(`${name}: replica ${rep?.state} on ${rep?.nodeId} in sandbox ${rep?.sandboxId}; up: ${JSON.stringify(up)}`);
      return { vnfId: inst.vnfId, completed: op.operationState === 'COMPLETED', state: rep?.state, boundPci, ...(up ? { up } : {}), ...(rep?.sandboxId ? { sandboxId: rep.sandboxId } : {}) };
    };

    /** The guest's view (vnfs.exec in the VNF), then a ping from the PF inside the node to the VF's address. */
    let dpdkProbed = false;
    const probe = async (name: string, v: { vnfId: string; up?: ReplicaIf; state?: string }): Promise<{ sent: number; received: number }> => {
      const up = v.up;
      if (v.state !== 'RUNNING' || !up?.ips[0] || !up.guestPciAddress) return { sent: 0, received: 0 };
      const ip = up.ips[0].split('/')[0]!;
      const during = (await edge.vfTable()).find((x) => x.pciAddress === up.pciAddress);
      log(`${name}: VF ${up.pciAddress} during: driver ${during?.driver}, MAC ${during?.mac}`);
      // DPDK owns the VF: no netdev; its driver in the guest and testpmd's probe of it instead
      const look = values.dpdk
        ? `readlink -f /sys/bus/pci/devices/${up.guestPciAddress}; readlink /sys/bus/pci/devices/${up.guestPciAddress}/driver; ls /dev/vfio`
        : `readlink -f /sys/bus/pci/devices/${up.guestPciAddress}; ls /sys/bus/pci/devices/${up.guestPciAddress}/net; ip -o -4 addr`;
      const ex = await api.call(`nfv.v1.tenant.${t}.vnfs.exec`, { id: v.vnfId, command: ['sh', '-c', look], timeoutMs: 120_000 }, 600_000).catch((e: Error) => ({ ok: false, error: { message: e.message } }));
      log(`${name}: in the guest: ${ex.ok ? JSON.stringify(ex.result.stdout ?? ex.result).slice(0, 600) : `exec failed: ${ex.error?.message}`}`);
      if (values.dpdk) {
        // the replica runs once testpmd's container started; its EAL start takes minutes in a nested guest: it is
        // ready when it answers
        const until = Date.now() + 30 * 60_000;
        for (;;) {
          const once = await edge.exec(['busybox', 'ping', '-c', '1', '-W', '10', ip], 60_000);
          if (/1 packets received/.test(once.stdout) || Date.now() > until) break;
          await new Promise((r) => setTimeout(r, 20_000));
        }
        timings[`${name}DpdkAnswersS`] = Math.round((Date.now() - t0) / 1000);
        // who answers: testpmd's icmpecho engine answers ARP and ping for any address; the guest kernel (which held
        // the replica's address before PrepareDataplane took the VF) only for its own. An address nobody holds
        // answered with the VF's MAC is DPDK on the VF.
        const foreign = FOREIGN_ADDRESS;
        const fp = await edge.exec(['busybox', 'ping', '-c', '3', '-W', '10', foreign], 120_000);
        const neigh = await edge.exec(['ip', 'neigh', 'show', foreign], 30_000);
        const mac = /lladdr (\S+)/.exec(neigh.stdout)?.[1];
        dpdkProbed = /[1-9]\d* packets received/.test(fp.stdout) && mac === up.mac;
        log(`${name}: ping ${foreign} (no one's address): ${/(\d+ packets received)/.exec(fp.stdout)?.[1] ?? fp.stdout.trim()}, answered from ${mac ?? 'no MAC'} (the VF's: ${up.mac})`);
        // testpmd's own words, when the node gets them out of the nested guest in time
        const logs = await api.call(`nfv.v1.tenant.${t}.vnfs.logs`, { id: v.vnfId, tailLines: 2000 }, 600_000).catch((e: Error) => ({ ok: false, error: { message: e.message } }));
        const lines = (logs.ok ? (logs.result.lines as string[]) : []).filter((l) => /Probe PCI driver|IOMMU|IOVA|Port 0:|icmpecho/.test(l));
        log(`${name}: testpmd: ${logs.ok ? `${lines.slice(0, 8).join(' | ')} (${(logs.result.lines as string[]).length} lines)` : `logs failed: ${logs.error?.message}`}`);
      }
      log(`${name}: ping ${ip} from the PF inside the node`);
      const ping = await edge.exec(['busybox', 'ping', '-c', '5', '-W', '10', ip], 300_000);
      const m = /(\d+) packets transmitted, (\d+) packets received/.exec(ping.stdout);
      const r = { sent: Number(m?.[1] ?? 0), received: Number(m?.[2] ?? 0) };
      log(`${name}: ping: ${r.received}/${r.sent} answered`);
      return r;
    };

    log(`instantiating a ${values.dpdk ? 'builtin:testpmd VNF with a DPDK data plane on' : 'builtin:busybox VNF with'} one sriov interface on physnet1 (the tenant VM is a nested TCG boot: many minutes)`);
    const first = await instantiate('du');
    // (a replica that never ran reports no interface: the VF seen bound while it started is the one to check)
    out.vfPciAddress = first.up?.pciAddress ?? first.boundPci;
    out.guestPciAddress = first.up?.guestPciAddress ?? '';
    // the node agent gives a VF to the guest agent as a PCI path (root port slot/function), never by MAC; the guest
    // reports the address that path resolved to: a reported guest address is a VF found by PCI path
    out.foundBy = out.guestPciAddress ? 'pci' : 'none';
    const p1 = await probe('du', first);
    out.pingsSent = p1.sent;
    out.pingsReceived = p1.received;
    const vnfs = [first];
    if (values.dpdk) out.dpdk = dpdkProbed;
    if (values.warm) {
      out.warm = { claimed: !!first.sandboxId && first.sandboxId === poolVm, poolVm, sandboxId: first.sandboxId ?? '', poolReadyS: timings.poolReadyS ?? 0, instantiateS: timings.duInstantiateS ?? 0 };
      log(`du: ${out.warm.claimed ? `claimed the warm pool VM ${poolVm}` : `did not claim the pool VM ${poolVm} (sandbox ${first.sandboxId})`}`);
    }

    // a later replica of the same tenant on the node: its VF is hot-plugged into the running tenant VM (QMP
    // device_add on a spare root port, the vfio group staged in the chrooted QEMU's root), not a second boot
    // (--warm: the first VF was a hot-plug already)
    const second = values.hotplug && !values.dpdk && !values.warm;
    let hotOk = !second;
    if (second && first.completed && out.pingsReceived > 0) {
      log('instantiating a second VNF of the same tenant with one sriov interface: its VF joins the running VM (hot-plug)');
      const du2 = await instantiate('du2');
      vnfs.push(du2);
      const p2 = await probe('du2', du2);
      out.hotplug = { vfPciAddress: du2.up?.pciAddress ?? du2.boundPci, guestPciAddress: du2.up?.guestPciAddress ?? '', pingsSent: p2.sent, pingsReceived: p2.received, restored: false };
      hotOk = du2.completed && !!out.hotplug.guestPciAddress && out.hotplug.guestPciAddress !== out.guestPciAddress && p2.sent > 0 && p2.received === p2.sent;
    }

    // an instantiate that did not complete (FAILED_TEMP) still holds the VNF: a FORCEFUL terminate takes over from it
    // (one that FAILED for good was rolled back: NOT_INSTANTIATED, nothing to terminate)
    for (const v of [...vnfs].reverse()) {
      const term = await api.call(`nfv.v1.tenant.${t}.vnfs.terminate`, { id: v.vnfId, ...(v.completed ? {} : { mode: 'FORCEFUL' }) });
      if (!term.ok) {
        log(`TERMINATE ${v.vnfId}: ${term.error?.code} ${term.error?.message}`);
        continue;
      }
      const top = await api.waitOp(t, term.result.opOccId as string, 20 * 60_000);
      log(`TERMINATE ${v.vnfId} ${top.operationState}`);
    }
    // every VF back on igbvf with the settings it had before (the driver re-probes asynchronously)
    let after: VfTableEntry[] = [];
    for (let i = 0; i < 300; i++) {
      after = await edge.vfTable();
      if (after.every((v) => v.driver === 'igbvf')) break;
      await new Promise((r) => setTimeout(r, 2000));
    }
    const restored = (pci: string): boolean => {
      const b = before.find((v) => v.pciAddress === pci);
      const a = after.find((v) => v.pciAddress === pci);
      log(`VF ${pci} before ${JSON.stringify(b)} after ${JSON.stringify(a)}`);
      return sameVf(b, a);
    };
    out.restored = restored(out.vfPciAddress);
    if (out.hotplug) out.hotplug.restored = restored(out.hotplug.vfPciAddress);
    ok = (!values.dpdk || out.dpdk === true) && (!values.warm || out.warm?.claimed === true) && first.completed && out.foundBy === 'pci' && out.pingsSent > 0 && out.pingsReceived === out.pingsSent && out.restored && hotOk && (!out.hotplug || out.hotplug.restored);
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
