/**
 * Runs inside the emulated edge node (test/src/edge-node.ts, as root in L1): a VF hot-plugged into a chrooted
 * QEMU that dropped to a uid, through the node agent's own QEMU driver (`QemuDriver.addNic`, which stages the VF's
 * vfio group and sysfs link in the VM root: hypervisor/vfio-root.ts). The VM has no guest kernel (it idles in its
 * firmware): QEMU's vfio-pci realize is what is proven, against L1's real vfio and (emulated) VT-d.
 *   node vf-hotplug-probe.js <vf pci> [<vf pci> ...]
 * Each VF is bound to vfio-pci first and given back to its driver at the end. Prints one JSON line.
 */
import { execFileSync } from 'node:child_process';
import { chownSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync, writeFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import { parsePciAddress } from '@edgenfv/contracts';
import { QemuDriver, type QemuDriverOptions, type QemuVmHandle } from '@edgenfv/node-agent/internal/hypervisor/qemu';
import { withQmp } from '@edgenfv/node-agent/internal/hypervisor/qmp';
import { prepareVmRoot } from '@edgenfv/node-agent/internal/hypervisor/vm-root';
import type { VmSpec } from '@edgenfv/node-agent/internal/hypervisor/types';

const UID = 64_123;

function driverOf(pci: string): string | null {
  const link = `/sys/bus/pci/devices/${pci}/driver`;
  return existsSync(link) ? basename(readlinkSync(link)) : null;
}

/** Binds the VF to `driver` (vfio-pci), or (null) back to the driver its ids choose, with no override left. */
function bind(pci: string, driver: string | null): void {
  const dev = `/sys/bus/pci/devices/${pci}`;
  if (driverOf(pci)) writeFileSync(`${dev}/driver/unbind`, pci);
  writeFileSync(`${dev}/driver_override`, driver ?? '\n');
  writeFileSync('/sys/bus/pci/drivers_probe', pci);
}

/** The driver's log: warnings and errors to stderr (the JSON line on stdout is the probe's answer). */
const log: Record<string, unknown> = {};
Object.assign(log, {
  child: () => log,
  debug: () => undefined,
  info: () => undefined,
  warn: (o: unknown, m?: string) => void process.stderr.write(`warn: ${m ?? ''} ${JSON.stringify(o)}\n`),
  error: (o: unknown, m?: string) => void process.stderr.write(`error: ${m ?? ''} ${JSON.stringify(o)}\n`),
});

function listTree(dir: string): string[] {
  if (!existsSync(dir)) return [];
  return execFileSync('find', [dir, '-mindepth', '1', '-printf', '%P %y %U %m\n'], { encoding: 'utf8' }).trim().split('\n').filter(Boolean).sort();
}

async function main(): Promise<void> {
  const vfs = process.argv.slice(2);
  if (!vfs.length) throw new Error('usage: vf-hotplug-probe <vf pci>...');
  const out: Record<string, unknown> = { vfs };
  const orig = vfs.map((pci) => ({ pci, driver: driverOf(pci) }));
  const dir = mkdtempSync('/tmp/vfhp-');
  const root = join(dir, 'vm');
  const runDir = join(dir, 'run');
  const driver = new QemuDriver({ logger: log as unknown as QemuDriverOptions['logger'] });
  let vm: QemuVmHandle | undefined;
  try {
    for (const pci of vfs) bind(pci, 'vfio-pci');
    out.bound = vfs.map(driverOf);
    await prepareVmRoot(root, UID);
    mkdirSync(runDir, { mode: 0o700 });
    chownSync(runDir, UID, UID);
    const spec: VmSpec = {
      sandboxId: 'sb-vfhp',
      vcpus: 1,
      maxVcpus: 1,
      memoryMiB: 128,
      maxMemoryMiB: 128,
      memory: { kind: 'memfd' },
      kernelArgs: '',
      devices: [],
      runDir,
      machine: 'q35',
      accel: 'tcg',
      sandbox: true,
      runAs: { uid: UID, gid: UID },
      chrootDir: root,
      hotplugSlots: vfs.length + 1,
    };
    vm = await driver.start(spec, new AbortController().signal);
    out.qemuUid = Number(/^Uid:\s+(\d+)/m.exec(readFileSync(`/proc/${vm.pid}/status`, 'utf8'))?.[1]);
    out.qemuRoot = readlinkSync(`/proc/${vm.pid}/root`);
    // the control: QEMU asked for the VF without the agent's staging finds nothing in its root
    try {
      await withQmp(vm.apiSocket, (q) => q.execute('device_add', { driver: 'vfio-pci', id: 'unstaged', host: vfs[0], bus: `rp${vfs.length}` }, 120_000), 60_000);
      out.unstaged = 'added';
    } catch (err) {
      out.unstaged = (err as Error).message;
    }
    out.hotplugged = [];
    for (const [i, pci] of vfs.entries()) {
      await driver.addNic(vm, { kind: 'vfio', id: `vf${i}`, pci: parsePciAddress(pci) }, spec);
      (out.hotplugged as string[]).push(pci);
    }
    out.staged = listTree(root).filter((l) => !l.startsWith('dev/net'));
    out.peripherals = (await withQmp(vm.apiSocket, (q) => q.execute<{ name: string }[]>('qom-list', { path: '/machine/peripheral' }))).map((p) => p.name).sort();
    out.vfioFds = readdirSync(`/proc/${vm.pid}/fd`)
      .map((fd) => {
        try {
          return readlinkSync(`/proc/${vm!.pid}/fd/${fd}`);
        } catch {
          return '';
        }
      })
      .filter((p) => p.includes('vfio'))
      .sort();
    // unplug the first VF (no guest acknowledges it: the driver waits, then drops the staged files anyway)
    await driver.removeNic(vm, 'vf0');
    out.afterUnplug = listTree(root).filter((l) => !l.startsWith('dev/net'));
    out.vfioStaged = vm.vfioStaged;
  } catch (err) {
    out.error = (err as Error).message;
    if (vm) out.qemuLog = readFileSync(join(runDir, 'qemu.log'), 'utf8').slice(-2000);
  } finally {
    if (vm) await driver.stop(vm, { graceMs: 0 }).catch(() => undefined);
    for (const o of orig) {
      try {
        if (driverOf(o.pci) !== o.driver) bind(o.pci, null);
      } catch (err) {
        out.restoreError = (err as Error).message;
      }
    }
    out.restored = orig.every((o) => driverOf(o.pci) === o.driver);
    rmSync(dir, { recursive: true, force: true });
    out.leftover = existsSync(dir);
  }
  process.stdout.write(`${JSON.stringify(out)}\n`);
}

main().catch((err: unknown) => {
  process.stderr.write(`vf-hotplug-probe: ${(err as Error).message}\n`);
  process.exit(1);
});
