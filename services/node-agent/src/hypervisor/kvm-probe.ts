/**
 * /dev/kvm can be there and still not run guests (seen on a nested host: the kernel hangs right after
 * "Probing EDD"). The probe boots the guest kernel without an initramfs under KVM; a working KVM reaches the
 * kernel's "Linux version" banner within a second or two, then panics (no root) and QEMU exits (-no-reboot).
 */
import { spawn } from 'node:child_process';
import { kvmUsable } from '../inventory.js';

export async function probeKvm(opts: { qemuBinary: string; kernelPath: string; devRoot?: string; timeoutMs?: number }): Promise<{ ok: boolean; reason: string }> {
  if (!kvmUsable(opts.devRoot ?? '/dev')) return { ok: false, reason: 'no usable /dev/kvm' };
  const args = ['-M', 'q35', '-accel', 'kvm', '-cpu', 'host', '-m', '128M', '-nodefaults', '-no-user-config', '-display', 'none', '-no-reboot',
    '-serial', 'stdio', '-kernel', opts.kernelPath, '-append', 'console=ttyS0 panic=-1 root=/dev/nonexistent'];
  return new Promise((resolve) => {
    const child = spawn(opts.qemuBinary, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let done = false;
    const finish = (ok: boolean, reason: string): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      child.kill('SIGKILL');
      resolve({ ok, reason });
    };
    const timer = setTimeout(() => finish(false, `KVM guest did not reach the kernel banner within ${opts.timeoutMs ?? 8000} ms (last: ${JSON.stringify(out.trim().split('\n').slice(-1)[0] ?? '')})`), opts.timeoutMs ?? 8000);
    const onData = (d: Buffer): void => {
      out += d.toString('latin1');
      if (/Linux version/.test(out)) finish(true, 'kernel booted under KVM');
    };
    child.stdout!.on('data', onData);
    child.stderr!.on('data', onData);
    child.once('error', (err) => finish(false, err.message));
    child.once('exit', () => finish(/Linux version/.test(out), `qemu exited: ${out.trim().split('\n').slice(-1)[0] ?? ''}`));
  });
}
