/**
 * CPU pinning of a tenant VM to the cores the ledger gave its replicas (`resources.cpus`, dedicated policy): vCPU i
 * runs on core i (in replica order), QEMU's other threads (main loop, I/O, RCU: the emulator) on all of the VM's
 * cores, so that nothing of the VM runs on another tenant's cores. The thread ids come from QMP `query-cpus-fast`;
 * the affinity is set with `taskset -p` (sched_setaffinity) for each thread, whatever cgroup controllers the host
 * has. Re-applied whenever the VM's vCPUs change (hotplug grow/shrink). A VM none of whose replicas is dedicated is
 * left alone; vCPUs beyond its dedicated cores (a shared replica in the same VM) float over the VM's cores.
 */
import { execFile } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { promisify } from 'node:util';

const run = promisify(execFile);

export interface PinPlan {
  /** thread id -> the cores it may run on */
  threads: Map<number, number[]>;
}

/** The dedicated cores of a VM's replicas, in replica order (vCPU order: the first replica booted the VM). */
export function vmCores(replicas: Iterable<{ alloc: { resources: { cpus?: number[] } } }>): number[] {
  const out: number[] = [];
  for (const r of replicas) for (const c of r.alloc.resources.cpus ?? []) if (!out.includes(c)) out.push(c);
  return out;
}

/**
 * vCPU threads (by vCPU index) 1:1 onto `cores`; every other thread of the process (and vCPUs beyond the cores,
 * or vCPUs sharing one thread under single-threaded TCG) onto all of `cores`.
 */
export function pinPlan(vcpuTids: readonly number[], processTids: readonly number[], cores: readonly number[]): PinPlan {
  const threads = new Map<number, number[]>();
  const shared = new Set(vcpuTids.filter((t, i) => vcpuTids.indexOf(t) !== i));
  vcpuTids.forEach((tid, i) => {
    if (shared.has(tid) || i >= cores.length) threads.set(tid, [...cores]);
    else threads.set(tid, [cores[i]!]);
  });
  for (const tid of processTids) if (!threads.has(tid)) threads.set(tid, [...cores]);
  return { threads };
}

export function processThreads(pid: number): number[] {
  return readdirSync(`/proc/${pid}/task`).map(Number).filter((n) => Number.isInteger(n));
}

/** Applies the plan: `taskset -p -c <cores> <tid>` per thread (numbers only: nothing reaches a shell). */
export async function applyPinPlan(plan: PinPlan): Promise<void> {
  for (const [tid, cores] of plan.threads) {
    try {
      await run('taskset', ['-p', '-c', cores.join(','), String(tid)]);
    } catch (err) {
      // a thread that ended meanwhile (QEMU's worker threads come and go) is no failure
      if ((err as { stderr?: string }).stderr?.includes('No such process')) continue;
      throw err;
    }
  }
}
