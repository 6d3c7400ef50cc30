#!/usr/bin/env node
/**
 * Guest agent entry point: reads the config (flags, then EDGENFV_* env), starts the agent, stops on SIGTERM.
 *   --port NAME | socket:PATH   virtio-serial port name (default edgenfv.agent.0) or the host stand-in socket
 *   --state-dir DIR --proto FILE --netns NS --sys-root DIR --proc-root DIR --crun BIN --busybox BIN --ip BIN
 *   --container-netns PATH
 *   --command-timeout-ms N      how long a command the agent runs may take (default 30000; a nested TCG guest needs
 *                               more: the node passes it with guest.extraKernelArgs `edgenfv.agent_args=...`)
 */
import { parseArgs } from 'node:util';
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { agentProtoPath } from '@edgenfv/contracts/internal/agent';
import { DEFAULT_CONFIG, startAgent, type AgentConfig } from './app.js';
import { createLog } from './log.js';

const { values } = parseArgs({
  options: {
    port: { type: 'string' },
    'state-dir': { type: 'string' },
    proto: { type: 'string' },
    netns: { type: 'string' },
    'sys-root': { type: 'string' },
    'proc-root': { type: 'string' },
    crun: { type: 'string' },
    busybox: { type: 'string' },
    ip: { type: 'string' },
    'container-netns': { type: 'string' },
    'log-level': { type: 'string' },
    'command-timeout-ms': { type: 'string' },
  },
  strict: true,
});

const commandTimeoutMs = values['command-timeout-ms'] === undefined ? DEFAULT_CONFIG.commandTimeoutMs : Number(values['command-timeout-ms']);
if (!Number.isInteger(commandTimeoutMs) || commandTimeoutMs < 1000 || commandTimeoutMs > 6 * 3_600_000) {
  process.stderr.write(`guest-agent: --command-timeout-ms: must be a whole number of milliseconds from 1000 to 21600000 (got ${values['command-timeout-ms']})\n`);
  process.exit(2);
}

const cfg: AgentConfig = {
  ...DEFAULT_CONFIG,
  protoPath: values.proto ?? agentProtoPath(),
  stateDir: values['state-dir'] ?? DEFAULT_CONFIG.stateDir,
  port: values.port ?? process.env.EDGENFV_AGENT_PORT ?? DEFAULT_CONFIG.port,
  sysRoot: values['sys-root'] ?? DEFAULT_CONFIG.sysRoot,
  procRoot: values['proc-root'] ?? DEFAULT_CONFIG.procRoot,
  crun: values.crun ?? DEFAULT_CONFIG.crun,
  busybox: values.busybox ?? DEFAULT_CONFIG.busybox,
  ipBin: values.ip ?? DEFAULT_CONFIG.ipBin,
  ...(values.netns ? { netns: values.netns } : {}),
  ...(values['container-netns'] ? { containerNetnsPath: values['container-netns'] } : {}),
  commandTimeoutMs,
};
const level = (values['log-level'] ?? process.env.EDGENFV_LOG_LEVEL ?? 'info') as 'debug' | 'info' | 'warn' | 'error';
const log = createLog({ level, bindings: { service: 'guest-agent' } });

/**
 * Leaving the process: a read on the virtio port blocks in a libuv worker thread until the host sends something,
 * and process.exit() joins those threads, so it could wait forever. Once everything is stopped, the agent kills
 * itself instead (init starts a new one); on the socket stand-in a plain exit works.
 */
const leave = (): void => {
  if (cfg.port.startsWith('socket:')) process.exit(0);
  process.kill(process.pid, 'SIGKILL');
};
// Shutdown RPC: power the VM off (busybox poweroff -f; QEMU runs with -no-reboot) or restart the agent
const exit = (powerOff: boolean): void => {
  if (powerOff) execFile('poweroff', ['-f'], () => leave());
  else leave();
};

startAgent(cfg, log, { exit }).then(
  (agent) => {
    // the guest's uptime once the agent serves its port (`npm run bench:boot`'s breakdown)
    try {
      process.stdout.write(`EDGENFV_AGENT_READY uptime=${readFileSync('/proc/uptime', 'utf8').split(' ')[0]}\n`);
    } catch {
      /* no /proc (tests on the host's socket stand-in) */
    }
    const stop = (sig: string) => {
      log.info({ signal: sig }, 'stopping');
      agent.stop().then(leave, (err: unknown) => {
        log.error({ err }, 'stop failed');
        leave();
      });
    };
    process.once('SIGTERM', () => stop('SIGTERM'));
    process.once('SIGINT', () => stop('SIGINT'));
  },
  (err: unknown) => {
    log.error({ err }, 'guest agent failed to start');
    process.exit(1);
  },
);
