// Starts a real dpdk-testpmd (no hugepages, no NICs, interactive on a FIFO) for vhost-user tests.
import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { openSync, closeSync, existsSync, rmSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';

export interface Testpmd {
  controlPath: string;
  telemetryPath: string;
  output(): string;
  command(line: string): void;
  stop(): Promise<void>;
}

export async function startTestpmd(dir: string): Promise<Testpmd> {
  const prefix = `npt${randomBytes(4).toString('hex')}`;
  const controlPath = join(dir, 'testpmd.ctl');
  execFileSync('mkfifo', ['-m', '0600', controlPath]);
  const fd = openSync(controlPath, 'r+'); // held open for writing too: testpmd never sees EOF
  const child: ChildProcess = spawn(
    'stdbuf', // testpmd's printf output is block-buffered on a pipe
    ['-o0', 'dpdk-testpmd', '-l', '0-1', '--no-huge', '-m', '256', '--no-pci', '--file-prefix', prefix, '--', '-i', '--total-num-mbufs=8192'],
    { stdio: [fd, 'pipe', 'pipe'] },
  );
  let out = '';
  child.stdout!.on('data', (b: Buffer) => (out += b.toString()));
  child.stderr!.on('data', (b: Buffer) => (out += b.toString()));
  const exited = new Promise<void>((r) => child.on('exit', () => r()));
  const telemetryPath = `/var/run/dpdk/${prefix}/dpdk_telemetry.v2`;
  const deadline = Date.now() + 60_000;
  while (!out.includes('testpmd>') || !existsSync(telemetryPath)) {
    if (child.exitCode !== null) throw new Error(`dpdk-testpmd exited ${child.exitCode}: ${out}`);
    if (Date.now() > deadline) throw new Error(`dpdk-testpmd did not come up: ${out}`);
    await new Promise((r) => setTimeout(r, 50));
  }
  return {
    controlPath,
    telemetryPath,
    output: () => out,
    command: (line) => void writeSync(fd, `${line}\n`),
    stop: async () => {
      if (child.exitCode === null) {
        writeSync(fd, 'quit\n');
        const t = setTimeout(() => child.kill('SIGKILL'), 5000);
        await exited;
        clearTimeout(t);
      }
      closeSync(fd);
      rmSync(`/var/run/dpdk/${prefix}`, { recursive: true, force: true });
    },
  };
}
