/**
 * VPP `startup.conf` for one data plane instance. Pure: a plan in, the file's text out.
 * CPUs: `main-core` and `corelist-workers` from the plan (one NUMA node under strict); buffers are allocated
 * per NUMA node that has workers; PCI NICs become `dpdk { dev <pci> { name, num-rx-queues ... } }`,
 * vhost-user NICs `dpdk { vdev net_vhostN,... }`.
 */
import { formatCpuList } from './cpus.js';
import { socketMemMiB, type DataplanePlan } from './plan.js';

export interface VppOptions {
  /** Folder for cli.sock and api.sock; default `/run/vpp/<filePrefix>`. */
  runtimeDir?: string;
  logFile?: string;
  /** A file of VPP CLI commands run at start (`unix { exec ... }`). */
  execFile?: string;
  /** Default 16384 (VPP's own default). */
  buffersPerNuma?: number;
  /** Buffer data size in bytes; VPP's default 2048. */
  bufferDataSizeBytes?: number;
  /** `memory { main-heap-size }`, e.g. "1G". */
  mainHeapSize?: string;
  /** Default true: single-segment buffers (faster vector PMDs, no jumbo frames). */
  noMultiSeg?: boolean;
  noTxChecksumOffload?: boolean;
  uioDriver?: 'vfio-pci' | 'uio_pci_generic' | 'igb_uio' | 'auto';
  /**
   * Plugins: by default every plugin is disabled but `dpdk_plugin.so` and those listed in `enable`.
   * `defaultEnabled: true` keeps VPP's default (all enabled) and disables those listed in `disable`.
   */
  plugins?: { defaultEnabled?: boolean; enable?: string[]; disable?: string[] };
}

function block(name: string, lines: string[], indent = '  '): string[] {
  return [`${name} {`, ...lines.map((l) => `${indent}${l}`), '}'];
}

export function renderVppStartupConf(plan: DataplanePlan, opts: VppOptions = {}): string {
  const runtimeDir = opts.runtimeDir ?? `/run/vpp/${plan.filePrefix}`;
  const hugepages = plan.memory.kind === 'hugepages';
  const pageSize = hugepages ? 'default-hugepage' : '4k';
  const out: string[] = [];

  const unix = ['nodaemon', `runtime-dir ${runtimeDir}`, `cli-listen ${runtimeDir}/cli.sock`];
  if (opts.logFile) unix.push(`log ${opts.logFile}`);
  if (opts.execFile) unix.push(`exec ${opts.execFile}`);
  out.push(...block('unix', unix), '');
  out.push(...block('api-segment', [`prefix ${plan.filePrefix}`]), '');
  out.push(...block('socksvr', [`socket-name ${runtimeDir}/api.sock`]), '');

  const cpu = [`main-core ${plan.mainCpu.cpu}`];
  if (plan.workerCpus.length > 0) cpu.push(`corelist-workers ${formatCpuList(plan.workerCpus.map((w) => w.cpu))}`);
  out.push(...block('cpu', cpu), '');

  const memory: string[] = [];
  if (opts.mainHeapSize) memory.push(`main-heap-size ${opts.mainHeapSize}`);
  memory.push(`main-heap-page-size ${pageSize}`);
  out.push(...block('memory', memory), '');

  const buffers = [`buffers-per-numa ${opts.buffersPerNuma ?? 16384}`];
  if (opts.bufferDataSizeBytes !== undefined) buffers.push(`default data-size ${opts.bufferDataSizeBytes}`);
  buffers.push(`page-size ${pageSize}`);
  out.push(...block('buffers', buffers), '');

  const dpdk: string[] = [];
  const pciNics = plan.nics.filter((n) => n.kind === 'pci');
  for (const n of pciNics) {
    const dev = [`name ${n.name}`, `num-rx-queues ${n.rxQueues}`, `num-tx-queues ${n.txQueues}`];
    if (n.rxDescriptors !== undefined) dev.push(`num-rx-desc ${n.rxDescriptors}`);
    if (n.txDescriptors !== undefined) dev.push(`num-tx-desc ${n.txDescriptors}`);
    dpdk.push(...block(`dev ${n.pciAddress}`, dev));
  }
  let vhostIdx = 0;
  for (const n of plan.nics) {
    if (n.kind !== 'vhost-user') continue;
    dpdk.push(`vdev net_vhost${vhostIdx++},iface=${n.socketPath},queues=${n.queues},client=${n.client ? 1 : 0}`);
  }
  if (pciNics.length === 0) dpdk.push('no-pci');
  if (hugepages) dpdk.push(`socket-mem ${socketMemMiB(plan).join(',')}`);
  else dpdk.push('no-hugetlb');
  if (plan.memory.kind === 'hugepages' && plan.memory.hugeDir) dpdk.push(`huge-dir ${plan.memory.hugeDir}`);
  if (plan.iovaMode) dpdk.push(`iova-mode ${plan.iovaMode}`);
  if (opts.uioDriver) dpdk.push(`uio-driver ${opts.uioDriver}`);
  if (opts.noMultiSeg ?? true) dpdk.push('no-multi-seg');
  if (opts.noTxChecksumOffload) dpdk.push('no-tx-checksum-offload');
  out.push(...block('dpdk', dpdk), '');

  const p = opts.plugins ?? {};
  const plugins: string[] = [];
  if (p.defaultEnabled) {
    for (const name of p.disable ?? []) plugins.push(`plugin ${name} { disable }`);
  } else {
    plugins.push('plugin default { disable }');
    for (const name of ['dpdk_plugin.so', ...(p.enable ?? []).filter((x) => x !== 'dpdk_plugin.so')]) {
      plugins.push(`plugin ${name} { enable }`);
    }
  }
  if (plugins.length > 0) out.push(...block('plugins', plugins), '');
  return out.join('\n');
}
