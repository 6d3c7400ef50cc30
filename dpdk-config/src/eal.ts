/**
 * DPDK EAL arguments (the part of a DPDK application's argv before `--`). Pure: a plan in, an argv out.
 * Targets DPDK >= 20.11 (`--main-lcore`, `-a` allow-list); Debian 12 ships 22.11.
 */
import { InvalidArgumentError } from '@edgenfv/contracts';
import { formatCpuList } from './cpus.js';
import { allCpus, socketMemMiB, type DataplanePlan } from './plan.js';

export interface EalOptions {
  /**
   * identity (default): `-l <cpus>`, lcore id = CPU id. remap: `--lcores 0@<cpu>,1@<cpu>...`, lcore ids from 0
   * (needed when a CPU id is at or above the build's RTE_MAX_LCORE, 128 by default).
   */
  lcores?: 'identity' | 'remap';
  /** RTE_MAX_LCORE of the DPDK build; identity mapping refuses CPU ids at or above it. Default 128. */
  maxLcore?: number;
  /** `-n`: memory channels. */
  memoryChannels?: number;
  /** Also cap each NUMA node's memory at what the plan asks (`--socket-limit`). */
  socketLimit?: boolean;
  /** DPDK role of vhost-user NICs: `vhost` (default; DPDK is the back end: net_vhost) or `virtio-user` (front end). */
  vhostUserRole?: 'vhost' | 'virtio-user';
}

/** The EAL argv for a plan, e.g. `['-l','2-4','--main-lcore','2','--file-prefix','vnf1', ...]`. */
export function renderEalArgs(plan: DataplanePlan, opts: EalOptions = {}): string[] {
  const cpus = allCpus(plan);
  const maxLcore = opts.maxLcore ?? 128;
  const args: string[] = [];
  if ((opts.lcores ?? 'identity') === 'identity') {
    const tooHigh = cpus.filter((c) => c >= maxLcore);
    if (tooHigh.length > 0) {
      throw new InvalidArgumentError([
        {
          field: 'lcores',
          message: `CPU ${tooHigh.join(', ')} is at or above RTE_MAX_LCORE (${maxLcore}): use lcores "remap"`,
        },
      ]);
    }
    args.push('-l', formatCpuList(cpus), '--main-lcore', String(plan.mainCpu.cpu));
  } else {
    // main lcore first so it gets lcore id 0
    args.push('--lcores', cpus.map((c, i) => `${i}@${c}`).join(','), '--main-lcore', '0');
  }
  if (opts.memoryChannels !== undefined) args.push('-n', String(opts.memoryChannels));
  args.push('--file-prefix', plan.filePrefix);
  if (plan.memory.kind === 'hugepages') {
    const perNode = socketMemMiB(plan).join(',');
    args.push('--socket-mem', perNode);
    if (opts.socketLimit) args.push('--socket-limit', perNode);
    if (plan.memory.hugeDir) args.push('--huge-dir', plan.memory.hugeDir);
  } else {
    args.push('--no-huge', '-m', String(plan.memory.memoryMiB));
  }
  if (plan.inMemory) args.push('--in-memory');
  if (plan.iovaMode) args.push('--iova-mode', plan.iovaMode);
  const pciNics = plan.nics.filter((n) => n.kind === 'pci');
  if (pciNics.length === 0) args.push('--no-pci');
  for (const n of pciNics) args.push('-a', n.pciAddress);
  let vhostIdx = 0;
  for (const n of plan.nics) {
    if (n.kind !== 'vhost-user') continue;
    const i = vhostIdx++;
    if ((opts.vhostUserRole ?? 'vhost') === 'vhost') {
      args.push('--vdev', `net_vhost${i},iface=${n.socketPath},queues=${n.queues},client=${n.client ? 1 : 0}`);
    } else {
      // virtio-user front end: server=1 when the peer (the switch) connects to us
      args.push('--vdev', `net_virtio_user${i},path=${n.socketPath},queues=${n.queues},server=${n.client ? 0 : 1}`);
    }
  }
  return args;
}
