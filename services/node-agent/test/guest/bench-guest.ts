/**
 * Guest benchmark: builds (or finds) the guest image, boots it under QEMU, and measures the time from QEMU spawn to
 * the agent's answer, the unary RTT over the framed virtio-serial channel, and the guest agent's RSS inside the VM.
 * Run: node services/node-agent/dist/test/guest/bench-guest.js   (root; QEMU; a few seconds)
 * Last line: one JSON object with the figures.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { silentLogger } from '@edgenfv/telemetry';
import { buildGuestImage, connectAgent } from '../../src/guest/index.js';
import { bootTestVm } from './vm-helper.js';

async function main(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'na-bench-'));
  const ns = `gbench-${process.pid}`;
  spawnSync('ip', ['netns', 'add', ns]);
  const t0 = Date.now();
  const image = await buildGuestImage({ log: silentLogger() });
  const imageMs = Date.now() - t0;
  const t1 = Date.now();
  const vm = bootTestVm({ image, dir, netns: ns, taps: [] });
  try {
    const conn = await connectAgent({ chardevPath: vm.chardevPath, timeoutMs: 180_000, log: silentLogger() });
    const bootToAgentMs = Date.now() - t1;
    const rtts: number[] = [];
    for (let i = 0; i < 50; i++) {
      const t = process.hrtime.bigint();
      await conn.client.health();
      rtts.push(Number(process.hrtime.bigint() - t) / 1e6);
    }
    rtts.sort((a, b) => a - b);
    const m = await conn.client.getMetrics();
    await conn.close();
    console.log(
      JSON.stringify({
        imageBuildOrCacheMs: imageMs,
        imageHash: image.hash,
        bootToAgentMs,
        unaryRttP50Ms: +rtts[Math.floor(rtts.length / 2)]!.toFixed(2),
        guestAgentRssMiB: +(m.agentRssBytes / 1048576).toFixed(1),
        guestAgentRssAnonMiB: +(m.agentRssAnonBytes / 1048576).toFixed(1),
      }),
    );
  } finally {
    await vm.stop();
    spawnSync('ip', ['netns', 'del', ns]);
    rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
