/**
 * Brings hotplugged vCPUs online. The node agent grows a tenant's VM by vCPU hotplug (QMP device_add); the kernel
 * adds the CPU offline and, with no udev in the guest, nothing onlines it. Memory is onlined by the kernel itself
 * (`memhp_default_state=online_movable`); CPUs have no such switch, so the agent does it.
 */
import { readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Log } from './log.js';

/** Onlines every CPU whose `online` file reads 0; returns their numbers. */
export async function onlineOfflineCpus(sysRoot: string): Promise<number[]> {
  const dir = join(sysRoot, 'devices/system/cpu');
  const names = await readdir(dir).catch(() => [] as string[]);
  const onlined: number[] = [];
  for (const name of names) {
    const m = /^cpu(\d+)$/.exec(name);
    if (!m) continue;
    const file = join(dir, name, 'online');
    const state = await readFile(file, 'utf8').catch(() => null); // cpu0 often has no `online` file
    if (state === null || state.trim() !== '0') continue;
    await writeFile(file, '1');
    onlined.push(Number(m[1]));
  }
  return onlined.sort((a, b) => a - b);
}

/** Polls for offline CPUs every `intervalMs`; returns a stop function. */
export function watchCpuHotplug(sysRoot: string, log: Log, intervalMs = 500): () => void {
  let busy = false;
  const timer = setInterval(() => {
    if (busy) return;
    busy = true;
    onlineOfflineCpus(sysRoot)
      .then((cpus) => {
        if (cpus.length) log.info({ cpus }, 'hotplugged vCPUs onlined');
      })
      .catch((err: unknown) => log.warn({ err }, 'could not online vCPUs'))
      .finally(() => (busy = false));
  }, intervalMs);
  timer.unref();
  return () => clearInterval(timer);
}
