/**
 * `--wait`: follows an op occurrence to its end and shows its steps as they happen, on stderr (stdout keeps the
 * final record for scripts). On a terminal: a spinner line with the state and elapsed time, each new step printed
 * above it; otherwise plain lines (`  +0.4 s  placed replica 0 on node-a`, then the state changes). It re-reads the
 * op occurrence when the VNF's notification arrives (`nfv.v1.tenant.<t>.events.<vnf>`), and every 2 s in case a
 * notification was missed.
 */
import type { NatsConnection, Subscription } from 'nats';
import { TERMINAL_OP_STATES, type OpOcc } from '@edgenfv/contracts';
import type { ApiClient } from '@edgenfv/api-client';

/** Where following ends: a terminal state, or FAILED_TEMP (it waits for opoccs retry|rollback|fail). */
const ENDS: readonly string[] = [...TERMINAL_OP_STATES, 'FAILED_TEMP'];

const FRAMES = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];

export interface ProgressOut {
  write(s: string): unknown;
  isTTY?: boolean;
}

export async function followOpOcc(c: ApiClient, nc: NatsConnection, tenant: string, opOccId: string, out: ProgressOut, signal?: AbortSignal): Promise<OpOcc> {
  const tty = out.isTTY === true;
  let op = await c.getOpOcc(tenant, opOccId);
  let shownSteps = 0;
  let shownState = '';
  let frame = 0;
  const t0 = Date.parse(op.startTime);
  const line = (s: string): void => {
    out.write(tty ? `\r\x1b[2K${s}\n` : `${s}\n`);
  };
  const show = (): void => {
    for (; shownSteps < op.steps.length; shownSteps++) {
      const s = op.steps[shownSteps]!;
      line(`  +${((Date.parse(s.at) - t0) / 1000).toFixed(1)} s  ${s.message}`);
    }
    if (!tty && op.operationState !== shownState && !ENDS.includes(op.operationState)) line(`${op.operation} ${op.id}: ${op.operationState}`);
    shownState = op.operationState;
    if (tty && !ENDS.includes(op.operationState)) {
      const done = op.steps.length;
      out.write(`\r\x1b[2K${FRAMES[frame++ % FRAMES.length]} ${op.operation} ${op.operationState} ${((Date.now() - t0) / 1000).toFixed(1)} s, ${done} step${done === 1 ? '' : 's'}`);
    }
  };
  const ended = (): OpOcc => {
    line(`${op.operation} ${op.operationState} after ${((Date.parse(op.stateEnteredTime) - t0) / 1000).toFixed(1)} s`);
    return op;
  };
  if (!tty) line(`${op.operation} ${op.id} on ${op.tenantId}/${op.vnfId}: following (${op.operationState})`);
  shownState = op.operationState;
  show();
  if (ENDS.includes(op.operationState)) return ended();

  let wake: () => void = () => undefined;
  let sub: Subscription | undefined;
  try {
    sub = nc.subscribe(`nfv.v1.tenant.${tenant}.events.${op.vnfId}`, { callback: () => wake() });
  } catch {
    sub = undefined; // no right to subscribe: the timer alone
  }
  const spin = tty ? setInterval(show, 120) : undefined;
  try {
    while (!ENDS.includes(op.operationState)) {
      if (signal?.aborted) throw new Error('interrupted');
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, 2_000);
        wake = () => {
          clearTimeout(timer);
          resolve();
        };
      });
      op = await c.getOpOcc(tenant, opOccId);
      show();
    }
  } finally {
    if (spin) clearInterval(spin);
    sub?.unsubscribe();
    if (tty) out.write('\r\x1b[2K');
  }
  return ended();
}
