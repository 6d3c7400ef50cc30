/**
 * Test helper: the real guest agent (its compiled main.js) as a separate process on this host, with the
 * virtio-serial port replaced by its socket stand-in (`--port socket:PATH`, which listens like QEMU's chardev).
 * Its network calls go to a netns the test owns. Killed in `stop()`.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';

export const REPO_ROOT = fileURLToPath(new URL('../../../../../', import.meta.url));
export const GUEST_AGENT_MAIN = join(REPO_ROOT, 'services/guest-agent/dist/src/main.js');

export interface GuestProcess {
  proc: ChildProcess;
  output(): string;
  stop(): Promise<void>;
}

export async function startGuestProcess(opts: { chardevPath: string; stateDir: string; netns?: string; extra?: string[] }): Promise<GuestProcess> {
  if (!existsSync(GUEST_AGENT_MAIN)) throw new Error(`${GUEST_AGENT_MAIN} missing: build services/guest-agent first (npx tsc -b)`);
  const args = [GUEST_AGENT_MAIN, '--port', `socket:${opts.chardevPath}`, '--state-dir', opts.stateDir, '--busybox', '/usr/bin/busybox', ...(opts.netns ? ['--netns', opts.netns] : []), ...(opts.extra ?? [])];
  const proc = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  proc.stdout!.on('data', (d) => (out += d));
  proc.stderr!.on('data', (d) => (out += d));
  const exited = new Promise<void>((r) => proc.once('exit', () => r()));
  for (let i = 0; i < 200 && !existsSync(opts.chardevPath); i++) {
    if (proc.exitCode !== null) throw new Error(`guest agent exited: ${out}`);
    await sleep(25);
  }
  if (!existsSync(opts.chardevPath)) throw new Error(`guest agent did not listen: ${out}`);
  return {
    proc,
    output: () => out,
    stop: async () => {
      if (proc.exitCode === null && proc.signalCode === null) {
        proc.kill('SIGKILL');
        await exited;
      }
    },
  };
}
