/** The node agent's metrics (own registry; labels from bounded sets only: never a VM id, MAC or PCI address). */
import { Counter, Gauge, Histogram, type Registry } from 'prom-client';

export interface NodeAgentMetrics {
  bootDuration: Histogram<'hypervisor' | 'accel' | 'result'>;
  execLatency: Histogram<string>;
  sandboxes: Gauge<'state'>;
  replicas: Gauge<'state'>;
  sandboxRss: Gauge<'tenant'>;
  guestAgentRss: Gauge<'tenant'>;
  heartbeats: Counter<'result'>;
  reconciles: Counter<'action' | 'result'>;
  /** Warm pools (sandbox/warm-pool.ts). */
  warmPoolVms: Gauge<'flavour' | 'state'>;
  warmClaims: Counter<'result'>;
  warmBootDuration: Histogram<string>;
  warmRestoreDuration: Histogram<string>;
  warmClaimDuration: Histogram<string>;
  /** 1 while the agent is fenced off NATS. */
  fenced: Gauge;
  /** Replicas found lost by the guest liveness watch (sandbox/guest-liveness.ts), by reason. */
  guestReplicasLost: Counter<'reason'>;
  /** Allocation watches reopened: it ended on its own (ended) or a key listing found it out of date (listing). */
  watchReopened: Counter<'how'>;
}

export function createMetrics(registry: Registry, rss?: () => Map<string, number>, guestRss?: () => Promise<Map<string, number>>): NodeAgentMetrics {
  const registers = [registry];
  return {
    bootDuration: new Histogram({
      name: 'edgenfv_vm_boot_duration_seconds',
      help: 'From placement command to guest agent ready, per hypervisor and accelerator.',
      labelNames: ['hypervisor', 'accel', 'result'],
      buckets: [0.25, 0.5, 1, 2, 4, 6, 8, 12, 20, 40, 90],
      registers,
    }),
    execLatency: new Histogram({
      name: 'edgenfv_vm_exec_latency_seconds',
      help: 'From placement command received to hypervisor exec.',
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1],
      registers,
    }),
    sandboxes: new Gauge({ name: 'edgenfv_sandboxes', help: 'Tenant sandboxes (VMs) on this node by state.', labelNames: ['state'], registers }),
    replicas: new Gauge({ name: 'edgenfv_replicas', help: 'VNF replicas on this node by state.', labelNames: ['state'], registers }),
    sandboxRss: new Gauge({
      name: 'edgenfv_sandbox_hypervisor_rss_bytes',
      help: 'Resident memory of the hypervisor process of each tenant sandbox.',
      labelNames: ['tenant'],
      registers,
      collect() {
        if (!rss) return;
        this.reset();
        for (const [tenant, bytes] of rss()) this.set({ tenant }, bytes);
      },
    }),
    guestAgentRss: new Gauge({
      name: 'edgenfv_guest_agent_rss_bytes',
      help: 'Resident memory of the guest agent inside each tenant VM (as it reports).',
      labelNames: ['tenant'],
      registers,
      async collect() {
        if (!guestRss) return;
        const m = await guestRss();
        this.reset();
        for (const [tenant, bytes] of m) this.set({ tenant }, bytes);
      },
    }),
    fenced: new Gauge({ name: 'edgenfv_node_fenced', help: '1 while this node agent is fenced: NATS out of reach for longer than the grace.', registers }),
    guestReplicasLost: new Counter({
      name: 'edgenfv_guest_replicas_lost_total',
      help: 'Replicas reported FAILED by the guest liveness watch: their guest agent restarted (restarted), their container vanished (container-gone) or the agent stopped answering (silent).',
      labelNames: ['reason'],
      registers,
    }),
    watchReopened: new Counter({
      name: 'edgenfv_node_alloc_watch_reopened_total',
      help: 'Allocation watches reopened: it ended on its own (how="ended") or a key listing found it out of date (how="listing").',
      labelNames: ['how'],
      registers,
    }),
    heartbeats: new Counter({ name: 'edgenfv_node_heartbeats_total', help: 'Heartbeats sent.', labelNames: ['result'], registers }),
    reconciles: new Counter({
      name: 'edgenfv_node_reconciles_total',
      help: 'Allocation reconcile actions.',
      labelNames: ['action', 'result'],
      registers,
    }),
    warmPoolVms: new Gauge({
      name: 'edgenfv_warm_pool_vms',
      help: 'Warm pool VMs by flavour (<vcpus>c-<MiB>m-numa<n|any>) and state: ready, booting, target (the configured count).',
      labelNames: ['flavour', 'state'],
      registers,
    }),
    warmClaims: new Counter({
      name: 'edgenfv_warm_pool_claims_total',
      help: "Tenants' first replicas on the node: claimed a warm VM, or none fitted (booted cold).",
      labelNames: ['result'],
      registers,
    }),
    warmBootDuration: new Histogram({
      name: 'edgenfv_warm_pool_boot_duration_seconds',
      help: 'A warm pool VM from boot to its guest agent answering (background refill, niced).',
      buckets: [1, 2, 4, 8, 12, 20, 40, 90, 180],
      registers,
    }),
    warmRestoreDuration: new Histogram({
      name: 'edgenfv_warm_pool_restore_duration_seconds',
      help: 'A warm pool VM restored from its template snapshot (snapshot boot): QEMU start to the guest agent answering and reidentified.',
      buckets: [0.25, 0.5, 1, 2, 4, 8, 20, 60],
      registers,
    }),
    warmClaimDuration: new Histogram({
      name: 'edgenfv_warm_claim_duration_seconds',
      help: 'A replica claiming a warm VM: from the claim to its container running (NICs, image disk hot-plugged).',
      buckets: [0.1, 0.25, 0.5, 1, 2, 4, 8, 16],
      registers,
    }),
  };
}
