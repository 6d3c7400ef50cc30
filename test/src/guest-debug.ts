/**
 * The operator-only debug console of a VM (node config `guest.debugConsole`, docs/security.md): a root shell in the
 * guest on a virtio-serial port whose host side is `<run folder>/debug.sock`. The chaos run and the guest agent kill
 * test use it to kill -9 the guest agent inside a VM (the guest's /init writes its pid to /run/edgenfv-agent.pid).
 */
import { connect } from 'node:net';
import { join } from 'node:path';

/** The debug console socket in a VM's run folder (services/node-agent sandbox/vm-lifecycle.ts DEBUG_CONSOLE_SOCKET). */
export const debugConsoleSocket = (runDir: string): string => join(runDir, 'debug.sock');

/**
 * Kills the guest agent of the VM with SIGKILL through its debug console; resolves with the killed agent's pid (in
 * the guest). Once only: the command is sent again until the shell answers (the guest drops what arrives while its
 * shell is not reading), and a marker file in the guest keeps a repeat from killing the agent /init starts next.
 */
export function killGuestAgent(runDir: string, timeoutMs = 120_000): Promise<number> {
  const cmd =
    'if [ ! -e /run/edgenfv-agent.killed ]; then cat /run/edgenfv-agent.pid > /run/edgenfv-agent.killed; kill -9 "$(cat /run/edgenfv-agent.killed)"; fi; ' +
    'echo "GUEST_AGENT_KILLED $(cat /run/edgenfv-agent.killed)"\n';
  return new Promise((resolve, reject) => {
    const sock = connect(debugConsoleSocket(runDir));
    let out = '';
    let timer: NodeJS.Timeout | undefined;
    const deadline = setTimeout(() => done(new Error(`no answer from the debug console of ${runDir} within ${timeoutMs} ms (is guest.debugConsole on?): ${out.slice(-200)}`)), timeoutMs);
    const done = (err: Error | null, pid?: number): void => {
      clearTimeout(deadline);
      clearInterval(timer);
      sock.destroy();
      if (err) reject(err);
      else resolve(pid!);
    };
    sock.on('error', (err) => done(err));
    sock.on('connect', () => {
      sock.write(cmd);
      timer = setInterval(() => sock.write(cmd), 1500);
    });
    sock.on('data', (d: Buffer) => {
      out += d.toString('utf8');
      const m = /GUEST_AGENT_KILLED (\d+)/.exec(out);
      if (m) done(null, Number(m[1]));
    });
  });
}
