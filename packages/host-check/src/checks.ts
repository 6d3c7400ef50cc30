/**
 * Host readiness checks of an edge node, after `kata-check`: each finds what the host has and says, unless it
 * passes, what to do. `required` marks the checks the node's config depends on (KVM when `qemu.accel: kvm`, IOMMU
 * and VFIO when physnets are mapped, hugepages and OVS-DPDK when a DPDK data plane is configured, ...); the report
 * is `ok` when no required check failed. Everything is read from files under `root` (sysfs, procfs, /dev) and from
 * programs run without a shell (execFile) with fixed arguments, so a test can point it at a fake tree.
 */
import { execFile, spawn } from 'node:child_process';
import { accessSync, constants, existsSync, readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { basename, join } from 'node:path';
import type { HostCheck } from '@edgenfv/contracts';

export type CheckStatus = HostCheck['status'];
export type { HostCheck };

export interface HostCheckReport {
  ok: boolean;
  checks: HostCheck[];
}

/** What the node's configuration promises to run. */
export interface HostPromises {
  /** `qemu.accel: kvm` (false: QEMU may fall back to TCG). */
  kvm: boolean;
  /** physnet -> PF PCI addresses mapped to it (VF passthrough needs IOMMU + vfio-pci). */
  physnets: Record<string, string[]>;
  /** A DPDK data plane (ovs-dpdk / vpp / testpmd) is configured: hugepages needed. */
  dpdk: boolean;
  /** An OVS-DPDK switch is configured. */
  ovsDpdk: boolean;
  /** Sandboxes must be confined with cgroup v2 limits (the node agent runs without them, saying so, when the host lacks them). */
  cgroups: boolean;
  qemuBinary: string;
}

export type Exec = (file: string, args: readonly string[], timeoutMs?: number) => Promise<{ code: number | null; stdout: string; stderr: string }>;

export interface HostCheckOptions {
  promises?: Partial<HostPromises>;
  /** Prefix of /sys, /proc, /dev, /run, /lib (tests: a fake tree). Default '/'. */
  root?: string;
  /** cgroup v2 mount (default `<root>/sys/fs/cgroup`). */
  cgroupRoot?: string;
  exec?: Exec;
  /** KVM as already probed by the caller (the node agent boots a probe VM): skips starting QEMU here. */
  kvmProbe?: { ok: boolean; reason: string };
}

const defaultExec: Exec = (file, args, timeoutMs = 10_000) =>
  new Promise((resolve) => {
    execFile(file, [...args], { timeout: timeoutMs, maxBuffer: 4 << 20, env: { PATH: process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin', LC_ALL: 'C' } }, (err, stdout, stderr) => {
      const code = err ? (typeof (err as NodeJS.ErrnoException & { code?: unknown }).code === 'number' ? ((err as unknown as { code: number }).code) : null) : 0;
      resolve({ code, stdout: String(stdout), stderr: err && !stderr ? (err as Error).message : String(stderr) });
    });
  });

/** The promises of a node agent config file's content (JSON/YAML already parsed), as the node agent reads them. */
export function promisesFromNodeConfig(raw: unknown): HostPromises {
  const o = (raw && typeof raw === 'object' ? raw : {}) as {
    physnets?: Record<string, unknown>;
    dataplanes?: unknown;
    qemu?: { accel?: unknown; binary?: unknown };
    isolation?: { requireCgroups?: unknown };
  };
  const physnets: Record<string, string[]> = {};
  for (const [pci, pn] of Object.entries(o.physnets ?? {})) if (typeof pn === 'string') (physnets[pn] ??= []).push(pci);
  const kinds: string[] = Array.isArray(o.dataplanes)
    ? (o.dataplanes as unknown[]).map((d) => (d as { kind?: unknown } | null)?.kind).filter((k): k is string => typeof k === 'string')
    : [];
  return {
    kvm: o.qemu?.accel === 'kvm',
    physnets,
    dpdk: kinds.some((k) => k === 'ovs-dpdk' || k === 'vpp' || k === 'testpmd' || k === 'dpdk'),
    ovsDpdk: kinds.includes('ovs-dpdk'),
    cgroups: o.isolation?.requireCgroups === true,
    qemuBinary: typeof o.qemu?.binary === 'string' ? o.qemu.binary : 'qemu-system-x86_64',
  };
}

const DEFAULT_PROMISES: HostPromises = { kvm: false, physnets: {}, dpdk: false, ovsDpdk: false, cgroups: false, qemuBinary: 'qemu-system-x86_64' };

function read(path: string): string | undefined {
  try {
    return readFileSync(path, 'utf8').trim();
  } catch {
    return undefined;
  }
}
function list(path: string): string[] {
  try {
    return readdirSync(path).sort();
  } catch {
    return [];
  }
}

class Checks {
  readonly out: HostCheck[] = [];
  add(name: string, status: CheckStatus, required: boolean, detail: string, fix = ''): void {
    this.out.push({ name, status, detail, fix: status === 'pass' ? '' : fix, required });
  }
}

export async function runHostChecks(opts: HostCheckOptions = {}): Promise<HostCheckReport> {
  const p: HostPromises = { ...DEFAULT_PROMISES, ...opts.promises };
  const root = opts.root ?? '/';
  const at = (...parts: string[]): string => join(root, ...parts);
  const exec = opts.exec ?? defaultExec;
  const c = new Checks();
  const usesVfs = Object.keys(p.physnets).length > 0;

  // ---- KVM: present, openable, and QEMU can create a KVM VM ----
  {
    const dev = at('dev/kvm');
    const fixKvm = 'enable VT-x/AMD-V in the firmware, load the module (modprobe kvm_intel or kvm_amd), give the node agent read-write access to /dev/kvm, or run on a host with nested virtualization; until then QEMU runs under TCG (10-50x slower)';
    if (!existsSync(dev)) c.add('kvm', 'fail', p.kvm, `${dev} does not exist: no hardware virtualization`, fixKvm);
    else {
      let rw = true;
      try {
        accessSync(dev, constants.R_OK | constants.W_OK);
      } catch {
        rw = false;
      }
      if (!rw) c.add('kvm', 'fail', p.kvm, `${dev} exists but cannot be opened read-write by uid ${process.getuid?.() ?? '?'}`, 'add the user to the kvm group or run the node agent as root');
      else {
        const probe = opts.kvmProbe ?? (await probeKvmWithQemu(p.qemuBinary));
        c.add('kvm', probe.ok ? 'pass' : 'fail', p.kvm, probe.ok ? `${dev} usable: ${probe.reason}` : `${dev} is present but not usable: ${probe.reason}`, fixKvm);
      }
    }
  }

  // ---- IOMMU on, groups sane ----
  {
    const units = list(at('sys/class/iommu'));
    const groups = list(at('sys/kernel/iommu_groups'));
    const cmdline = read(at('proc/cmdline')) ?? '';
    const fixIommu = 'enable VT-d / AMD-Vi in the firmware and add intel_iommu=on iommu=pt (Intel) or amd_iommu=on (AMD) to the kernel command line, then reboot';
    if (units.length === 0 || groups.length === 0) {
      c.add('iommu', 'fail', usesVfs, `no IOMMU: ${units.length} IOMMU units, ${groups.length} groups (kernel command line: ${/iommu/.test(cmdline) ? cmdline.match(/\S*iommu\S*/g)!.join(' ') : 'no iommu option'})`, fixIommu);
    } else {
      // a VF shares its group only with bridges: another endpoint in the group would go to the guest with it
      const shared: string[] = [];
      for (const g of groups) {
        const devs = list(at('sys/kernel/iommu_groups', g, 'devices'));
        const endpoints = devs.filter((d) => !(read(at('sys/bus/pci/devices', d, 'class')) ?? '').startsWith('0x0604'));
        const vfs = endpoints.filter((d) => existsSync(at('sys/bus/pci/devices', d, 'physfn')));
        if (vfs.length > 0 && endpoints.length > 1) shared.push(`group ${g}: ${endpoints.join(', ')}`);
      }
      if (shared.length) c.add('iommu', 'warn', usesVfs, `IOMMU on (${units.length} units, ${groups.length} groups), but VFs share a group with other devices: ${shared.slice(0, 4).join('; ')}`, 'enable ACS on the PCIe ports (firmware), or move the NIC to a slot behind its own root port; a VF in a shared group cannot be passed through alone');
      else c.add('iommu', 'pass', usesVfs, `IOMMU on: ${units.length} units, ${groups.length} groups; every VF in a group of its own`);
    }
  }

  // ---- vfio-pci and VF drivers ----
  {
    const loaded = existsSync(at('sys/bus/pci/drivers/vfio-pci'));
    const release = (read(at('proc/sys/kernel/osrelease')) ?? '').trim();
    const builtin = read(at('lib/modules', release, 'modules.builtin')) ?? '';
    const dep = read(at('lib/modules', release, 'modules.dep')) ?? '';
    const available = loaded || /vfio-pci\.ko/.test(builtin) || /vfio-pci\.ko/.test(dep);
    if (loaded) c.add('vfio-pci', 'pass', usesVfs, 'the vfio-pci driver is loaded');
    else if (available) c.add('vfio-pci', 'warn', usesVfs, `vfio-pci is available for kernel ${release} but not loaded`, 'modprobe vfio-pci (and add it to /etc/modules-load.d/ so it loads at boot)');
    else c.add('vfio-pci', 'fail', usesVfs, `vfio-pci is neither loaded nor available as a module for kernel ${release || '(unknown)'}`, 'install the kernel\'s modules (linux-image-<version>) with VFIO enabled, then modprobe vfio-pci');
  }

  // ---- SR-IOV PFs, VFs per physnet and their drivers ----
  {
    const pfs: Array<{ pci: string; ifName: string; total: number; num: number; drivers: Record<string, number> }> = [];
    for (const ifName of list(at('sys/class/net'))) {
      const devDir = at('sys/class/net', ifName, 'device');
      const total = Number(read(join(devDir, 'sriov_totalvfs')) ?? 0);
      if (!total) continue;
      let pci = ifName;
      try {
        pci = basename(readlinkSync(devDir));
      } catch {
        /* keep the name */
      }
      const num = Number(read(join(devDir, 'sriov_numvfs')) ?? 0);
      const drivers: Record<string, number> = {};
      for (const e of list(devDir).filter((n) => /^virtfn\d+$/.test(n))) {
        let drv = 'none';
        try {
          drv = basename(readlinkSync(join(devDir, e, 'driver')));
        } catch {
          /* unbound */
        }
        drivers[drv] = (drivers[drv] ?? 0) + 1;
      }
      pfs.push({ pci, ifName, total, num, drivers });
    }
    const desc = pfs.map((f) => `${f.ifName} (${f.pci}): ${f.num}/${f.total} VFs${Object.keys(f.drivers).length ? ` [${Object.entries(f.drivers).map(([d, n]) => `${n} ${d}`).join(', ')}]` : ''}`).join('; ');
    if (!usesVfs) c.add('sriov', pfs.length ? 'pass' : 'warn', false, pfs.length ? `SR-IOV PFs: ${desc}; no physnet mapped in the node config` : 'no SR-IOV capable NIC; no physnet mapped in the node config (sriov interfaces cannot be placed here)', 'map PFs to physnets in the node config (physnets: {"<pf pci>": "physnet1"}) on a host with SR-IOV NICs');
    for (const [physnet, pcis] of Object.entries(p.physnets)) {
      const mine = pfs.filter((f) => pcis.includes(f.pci));
      const vfs = mine.reduce((a, f) => a + f.num, 0);
      const missing = pcis.filter((x) => !pfs.some((f) => f.pci === x));
      if (missing.length) c.add(`sriov ${physnet}`, 'fail', true, `physnet ${physnet}: PF ${missing.join(', ')} not found or not SR-IOV capable${pfs.length ? ` (found: ${desc})` : ' (no SR-IOV NIC on this host)'}`, 'fix the PCI addresses in the node config\'s physnets, or install an SR-IOV NIC and enable SR-IOV in the firmware');
      else if (vfs === 0) c.add(`sriov ${physnet}`, 'fail', true, `physnet ${physnet}: ${mine.map((f) => f.ifName).join(', ')} has no VFs enabled`, `echo <n> > /sys/class/net/${mine[0]?.ifName ?? '<pf>'}/device/sriov_numvfs (at boot: a systemd unit or udev rule)`);
      else c.add(`sriov ${physnet}`, 'pass', true, `physnet ${physnet}: ${vfs} VFs on ${mine.map((f) => `${f.ifName} [${Object.entries(f.drivers).map(([d, n]) => `${n} ${d}`).join(', ')}]`).join(', ')}`);
    }
  }

  // ---- hugepages per size and NUMA node ----
  {
    const rows: string[] = [];
    let total = 0;
    for (const node of list(at('sys/devices/system/node')).filter((n) => /^node\d+$/.test(n))) {
      for (const size of list(at('sys/devices/system/node', node, 'hugepages'))) {
        const nr = Number(read(at('sys/devices/system/node', node, 'hugepages', size, 'nr_hugepages')) ?? 0);
        const free = Number(read(at('sys/devices/system/node', node, 'hugepages', size, 'free_hugepages')) ?? 0);
        total += nr;
        rows.push(`${node} ${size.replace('hugepages-', '')}: ${free}/${nr} free`);
      }
    }
    const mounted = (read(at('proc/mounts')) ?? '').split('\n').some((l) => l.split(' ')[2] === 'hugetlbfs');
    const detail = `${rows.join(', ') || 'no hugepage pools'}; hugetlbfs ${mounted ? 'mounted' : 'not mounted'}`;
    const fix = 'reserve pages per NUMA node: echo 1024 > /sys/devices/system/node/node0/hugepages/hugepages-2048kB/nr_hugepages (or hugepagesz=1G hugepages=N on the kernel command line), and mount hugetlbfs at /dev/hugepages';
    if (total > 0 && mounted) c.add('hugepages', 'pass', p.dpdk, detail);
    else c.add('hugepages', p.dpdk ? 'fail' : 'warn', p.dpdk, detail, fix);
  }

  // ---- OVS-DPDK present / running ----
  {
    const bin = ['/usr/lib/openvswitch-switch-dpdk/ovs-vswitchd-dpdk', '/usr/sbin/ovs-vswitchd'].map((b) => at(b.slice(1))).find((b) => existsSync(b));
    const ver = bin ? await exec(bin, ['--version'], 5_000) : undefined;
    const dpdk = ver ? /DPDK/i.test(ver.stdout) : false;
    const pid = read(at('run/openvswitch/ovs-vswitchd.pid')) ?? read(at('var/run/openvswitch/ovs-vswitchd.pid'));
    const running = pid !== undefined && existsSync(at('proc', pid));
    const first = ver?.stdout.split('\n').find((l) => /ovs-vswitchd/.test(l))?.trim();
    if (!bin) c.add('ovs-dpdk', p.ovsDpdk ? 'fail' : 'warn', p.ovsDpdk, 'ovs-vswitchd is not installed', 'apt-get install openvswitch-switch-dpdk');
    else if (!dpdk) c.add('ovs-dpdk', p.ovsDpdk ? 'fail' : 'warn', p.ovsDpdk, `${bin} has no DPDK support (${first ?? 'no version'})`, 'apt-get install openvswitch-switch-dpdk and update-alternatives --set ovs-vswitchd /usr/lib/openvswitch-switch-dpdk/ovs-vswitchd-dpdk');
    else c.add('ovs-dpdk', 'pass', p.ovsDpdk, `${first ?? bin} with DPDK; ${running ? `running (pid ${pid})` : 'not running now (the node agent starts its own instance when its config asks for one)'}`);
  }

  // ---- cgroup v2 and its controllers ----
  {
    const cg = opts.cgroupRoot ?? at('sys/fs/cgroup');
    const controllers = (read(join(cg, 'cgroup.controllers')) ?? '').split(/\s+/).filter(Boolean);
    const want = ['cpu', 'cpuset', 'memory', 'pids'];
    const lacking = want.filter((w) => !controllers.includes(w));
    const fix = 'boot with the unified hierarchy (systemd.unified_cgroup_hierarchy=1, the default since Debian 11) and enable the controllers: echo "+cpu +cpuset +memory +pids" > /sys/fs/cgroup/cgroup.subtree_control';
    if (!existsSync(join(cg, 'cgroup.controllers'))) c.add('cgroup v2', 'fail', p.cgroups, `${cg} is not a cgroup v2 hierarchy (cgroup v1 or hybrid): sandboxes run without CPU/memory/pids limits`, fix);
    else if (lacking.length) c.add('cgroup v2', 'fail', p.cgroups, `cgroup v2 at ${cg} lacks ${lacking.join(', ')} (has: ${controllers.join(' ') || 'none'})`, fix);
    else c.add('cgroup v2', 'pass', p.cgroups, `cgroup v2 at ${cg} with ${want.join(', ')}`);
  }

  // ---- QEMU version and features ----
  {
    const v = await exec(p.qemuBinary, ['--version'], 10_000);
    const m = /version (\d+)\.(\d+)(?:\.(\d+))?/.exec(v.stdout);
    if (v.code !== 0 || !m) c.add('qemu', 'fail', true, `${p.qemuBinary} does not run: ${(v.stderr || v.stdout).trim().split('\n')[0] ?? ''}`, 'apt-get install -t bookworm-backports qemu-system-x86 (QEMU >= 8)');
    else {
      const major = Number(m[1]);
      const [help, devices] = await Promise.all([exec(p.qemuBinary, ['-help'], 10_000), exec(p.qemuBinary, ['-device', 'help', '-machine', 'none'], 10_000)]);
      const runWith = /-run-with/.test(help.stdout);
      const igb = /name "igb"/.test(devices.stdout);
      const lacks = [...(igb ? [] : ['the igb NIC model (emulated SR-IOV)']), ...(runWith ? [] : ['-run-with (chroot/user for the sandbox)'])];
      const detail = `QEMU ${m[0].replace('version ', '')}${igb ? ', igb' : ''}${runWith ? ', -run-with' : ''}`;
      if (major < 8) c.add('qemu', 'fail', true, `${detail}: older than 8`, 'apt-get install -t bookworm-backports qemu-system-x86 (QEMU >= 8)');
      else if (lacks.length) c.add('qemu', 'warn', false, `${detail}; lacks ${lacks.join(' and ')}`, 'apt-get install -t bookworm-backports qemu-system-x86 (QEMU >= 9 has both)');
      else c.add('qemu', 'pass', true, detail);
    }
  }

  // ---- Debian packages a node runs with ----
  {
    const pkgs = ['qemu-system-x86', 'busybox-static', 'crun', 'iproute2', 'nftables', 'kmod', ...(p.ovsDpdk ? ['openvswitch-switch-dpdk'] : []), ...(p.dpdk ? ['dpdk'] : [])];
    const q = await exec('dpkg-query', ['-W', '-f', '${Package} ${db:Status-Abbrev} ${Version}\\n', ...pkgs], 10_000);
    if (q.code === null && !q.stdout) c.add('packages', 'warn', false, `cannot ask dpkg: ${q.stderr.trim()}`, 'on a non-Debian host install the equivalents of: ' + pkgs.join(' '));
    else {
      const installed = new Set(q.stdout.split('\n').filter((l) => / ii /.test(l)).map((l) => l.split(' ')[0]));
      const missing = pkgs.filter((x) => !installed.has(x));
      if (missing.length) c.add('packages', 'fail', true, `missing Debian packages: ${missing.join(', ')}`, `apt-get install ${missing.join(' ')}`);
      else c.add('packages', 'pass', true, `installed: ${pkgs.join(', ')}`);
    }
  }

  // ---- time sync ----
  {
    const sources: string[] = [];
    if (existsSync(at('run/systemd/timesync/synchronized'))) sources.push('systemd-timesyncd synchronized');
    const td = await exec('timedatectl', ['show', '-p', 'NTPSynchronized', '--value'], 5_000);
    if (td.code === 0 && td.stdout.trim() === 'yes') sources.push('timedatectl: NTPSynchronized=yes');
    const chrony = await exec('chronyc', ['-n', 'tracking'], 5_000);
    if (chrony.code === 0 && /Leap status\s*:\s*Normal/.test(chrony.stdout)) sources.push('chrony: leap status normal');
    if (sources.length) c.add('time sync', 'pass', false, sources.join('; '));
    else c.add('time sync', 'warn', false, 'no synchronized clock found (systemd-timesyncd, chrony): leases, heartbeats and op occurrence times compare clocks across nodes', 'apt-get install chrony (or systemd-timesyncd) and point it at the site\'s NTP servers');
  }

  const checks = c.out;
  return { ok: !checks.some((x) => x.required && x.status === 'fail'), checks };
}

/**
 * Runs guest code under KVM the way the node agent will (q35, `-cpu host`): the firmware (SeaBIOS) prints its
 * banner on the debug port within a second on a working KVM. /dev/kvm can exist and still not run guests (a
 * nested host that rejects the host CPU model's MSRs, or hangs): that is a fail, with QEMU's own words.
 */
function probeKvmWithQemu(qemu: string, timeoutMs = 10_000): Promise<{ ok: boolean; reason: string }> {
  return new Promise((resolve) => {
    const child = spawn(qemu, ['-M', 'q35', '-accel', 'kvm', '-cpu', 'host', '-m', '32M', '-nodefaults', '-no-user-config', '-display', 'none', '-no-reboot',
      '-chardev', 'stdio,id=fw', '-device', 'isa-debugcon,iobase=0x402,chardev=fw'], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { PATH: process.env.PATH ?? '/usr/bin:/bin', LC_ALL: 'C' },
    });
    let out = '';
    let err = '';
    let done = false;
    const finish = (ok: boolean, reason: string): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      child.kill('SIGKILL');
      resolve({ ok, reason });
    };
    const timer = setTimeout(() => finish(false, `no guest code ran under KVM within ${timeoutMs} ms`), timeoutMs);
    child.stdout.on('data', (b: Buffer) => {
      out += b.toString('latin1');
      if (/SeaBIOS \(version/.test(out)) finish(true, 'a q35 guest with -cpu host ran its firmware under KVM');
    });
    child.stderr.on('data', (b: Buffer) => (err += b.toString()));
    child.once('error', (e) => finish(false, `${qemu}: ${e.message}`));
    child.once('exit', (code) => finish(false, `QEMU exited (${code}) before the guest ran: ${err.split('\n').find((l) => /error/i.test(l))?.trim() ?? err.trim().split('\n')[0] ?? ''}`));
  });
}
