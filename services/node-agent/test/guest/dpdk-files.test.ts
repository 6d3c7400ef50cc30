/**
 * builtin:testpmd's files (dpdk-files.ts): the manifest the guest image carries is complete. A root made of nothing
 * but the manifest's files and links runs the real dpdk-testpmd (chroot in a private mount namespace with /proc,
 * /sys and /dev bound in), which loads the PMDs from the manifest and forwards between two net_null ports.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { copyFileSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { DPDK_PMD_DIR, dpdkFileSet, dpdkManifest, GUEST_PMDS, TESTPMD_BINARY } from '../../src/guest/dpdk-files.js';

test('the DPDK file set: testpmd, its libraries, only the guest PMDs, and a manifest of them', async () => {
  const set = await dpdkFileSet();
  assert.ok(set.files.includes(TESTPMD_BINARY));
  for (const pmd of GUEST_PMDS) assert.ok(set.files.some((f) => f.startsWith(`${DPDK_PMD_DIR}/librte_${pmd}.so.`)), pmd);
  // PMDs dpdk-testpmd does not link and the guest does not use stay out (Debian's testpmd links i40e, ixgbe, bnxt,
  // bond, dpaa, mlx5 and ice for their commands: those come along; e1000 and iavf are the guest's VF PMDs)
  const pmdsCarried = set.files.filter((f) => f.startsWith(DPDK_PMD_DIR + '/'));
  assert.ok(!pmdsCarried.some((f) => /net_(ena|af_packet|vhost|ring|tap|igc|txgbe)\./.test(f)), pmdsCarried.join(' '));
  assert.ok(set.links.some(([p]) => p === `${DPDK_PMD_DIR}/librte_net_virtio.so`));
  const m = dpdkManifest(set);
  assert.ok(m.split('\n').includes(TESTPMD_BINARY));
  assert.match(m, new RegExp(`^L ${DPDK_PMD_DIR}/librte_net_virtio.so librte_net_virtio.so.23$`, 'm'));
});

test('a root made only of the manifest runs dpdk-testpmd, which forwards between two net_null ports', async (t) => {
  const set = await dpdkFileSet();
  const root = mkdtempSync(join(tmpdir(), 'na-dpdkroot-'));
  const prefix = `na-dpdkroot-${process.pid}`;
  t.after(() => rmSync(root, { recursive: true, force: true }));
  for (const f of set.files) {
    mkdirSync(join(root, dirname(f)), { recursive: true });
    copyFileSync(f, join(root, f));
  }
  for (const [p, target] of set.links) {
    mkdirSync(join(root, dirname(p)), { recursive: true });
    if (!existsSync(join(root, p))) symlinkSync(target, join(root, p));
  }
  for (const d of ['proc', 'sys', 'dev', 'run', 'tmp', 'var']) mkdirSync(join(root, d), { recursive: true });
  symlinkSync('../run', join(root, 'var', 'run')); // as in builtin:testpmd's rootfs
  // fixed paths, nothing from a tenant: /proc, /sys, /dev bound in; /run private (DPDK's runtime folder)
  const script = `set -e; for d in proc sys dev; do mount --rbind /$d "$1/$d"; done; mount -t tmpfs tmpfs "$1/run"; exec chroot "$1" ${TESTPMD_BINARY} -l 0-1 --no-huge -m 64 --no-pci --file-prefix ${prefix} --vdev net_null0 --vdev net_null1 --log-level=lib.eal:debug -- --forward-mode=io --total-num-mbufs=2048 --stats-period=1`;
  const child = spawn('unshare', ['--mount', '--propagation', 'private', 'sh', '-c', script, 'sh', root], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  const forwarded = new Promise<void>((resolve) => {
    const onData = (b: Buffer): void => {
      out += b.toString();
      // a statistics block with a non-zero RX count on port 1: the null PMD's frames went through the io engine
      if (/NIC statistics for port 1[\s\S]*?RX-packets: [1-9]/.test(out)) resolve();
    };
    child.stdout.on('data', onData);
    child.stderr.on('data', onData);
  });
  const exited = new Promise<string>((resolve) => child.once('exit', (code, signal) => resolve(signal ?? `code ${code}`)));
  const first = await Promise.race([forwarded.then(() => 'forwarded'), exited.then((c) => `exited ${c}`)]);
  assert.equal(first, 'forwarded', out);
  assert.doesNotMatch(out, /No probed ethernet devices/);
  // EAL loaded the guest's PMDs from the plugin folder, the VF PMDs among them (igbvf's e1000, iavf)
  for (const pmd of GUEST_PMDS) assert.match(out, new RegExp(`open shared lib ${DPDK_PMD_DIR}/librte_${pmd}\\.so`), pmd);
  child.kill('SIGTERM'); // testpmd's handler ends the --stats-period loop: ports stopped and closed, exit 0
  assert.equal(await exited, 'code 0', out.slice(-2000));
  assert.match(out, /Bye\.\.\./);
});
