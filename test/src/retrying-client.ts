/**
 * An API client that behaves as a careful orchestrator does while the site has faults: a request that times out or
 * is answered UNAVAILABLE / INTERNAL is sent again with the same requestId until it is answered; every answer to a
 * requestId is kept, so a test can check that a retried request was never carried out twice (all answers alike).
 */
import type { NatsConnection } from 'nats';

const enc = new TextEncoder();
const dec = new TextDecoder();
const TERMINAL = ['COMPLETED', 'FAILED', 'ROLLED_BACK'];

export class RetryingClient {
  requests = 0;
  retried = 0;
  /** Requests never answered (timeouts until the client gave up): lost. */
  unanswered = 0;
  /** Op occurrences seen waiting in FAILED_TEMP (then resolved). */
  failedTemp = 0;
  private readonly answers = new Map<string, string[]>();

  constructor(
    private readonly nc: NatsConnection,
    private readonly opts: { giveUpMs?: number; timeoutMs?: number } = {},
  ) {}

  /** One request, retried while the answer is a timeout or a retryable error; the last envelope. */
  async call(subject: string, body: unknown): Promise<any> {
    this.requests++;
    const until = Date.now() + (this.opts.giveUpMs ?? 120_000);
    for (let attempt = 0; ; attempt++) {
      if (attempt > 0) this.retried++;
      try {
        const m = await this.nc.request(subject, enc.encode(JSON.stringify(body)), { timeout: this.opts.timeoutMs ?? 5_000 });
        const env = JSON.parse(dec.decode(m.data));
        if (env.ok || !['UNAVAILABLE', 'INTERNAL'].includes(env.error?.code)) return env;
        if (Date.now() > until) return env;
      } catch (err) {
        // a closed connection does not come back: the test is over (a failed one must not wait out giveUpMs)
        if (this.nc.isClosed() || Date.now() > until) {
          this.unanswered++;
          throw err;
        }
      }
      await new Promise((r) => setTimeout(r, 250));
    }
  }

  /** A mutating request (its body carries a requestId); throws unless it is accepted; the result. */
  async mutate(tenant: string, op: string, body: { requestId: string } & Record<string, unknown>): Promise<any> {
    const env = await this.call(`nfv.v1.tenant.${tenant}.${op}`, body);
    const key = `${tenant}/${body.requestId}`;
    const seen = this.answers.get(key) ?? [];
    seen.push(JSON.stringify(env));
    this.answers.set(key, seen);
    if (!env.ok) throw new Error(`${op} ${body.requestId} refused: ${JSON.stringify(env.error)}`);
    // ask once more with the same requestId: the first answer again, nothing done twice
    const again = await this.call(`nfv.v1.tenant.${tenant}.${op}`, body);
    seen.push(JSON.stringify(again));
    return env.result;
  }

  /** Every answer a requestId got (to show what differed). */
  answersOf(key: string): string[] {
    return this.answers.get(key) ?? [];
  }

  /** requestIds whose answers differ (the request was carried out more than once). */
  answeredDifferently(): string[] {
    return [...this.answers].filter(([, a]) => new Set(a).size > 1).map(([k]) => k);
  }

  /**
   * Polls an op occurrence until it is terminal. One that waits in FAILED_TEMP (a failure that may pass, e.g. its
   * node was lost) is decided as a simple orchestrator would: `resolve` ('fail' by default) and waited for again.
   */
  async waitOp(tenant: string, id: string, timeoutMs = 300_000, resolve: 'fail' | 'retry' = 'fail'): Promise<any> {
    const until = Date.now() + timeoutMs;
    for (;;) {
      const r = await this.call(`nfv.v1.tenant.${tenant}.opoccs.get`, { id }).catch(() => undefined);
      if (r?.ok && TERMINAL.includes(r.result.operationState)) return r.result;
      if (r?.ok && r.result.operationState === 'FAILED_TEMP' && !r.result.pendingAction) {
        this.failedTemp++;
        await this.call(`nfv.v1.tenant.${tenant}.opoccs.${resolve}`, { id }).catch(() => undefined);
      }
      if (this.nc.isClosed()) throw new Error(`op ${id}: the connection is closed`);
      if (Date.now() > until) throw new Error(`op ${id} not terminal after ${timeoutMs} ms: ${JSON.stringify(r)}`);
      await new Promise((res) => setTimeout(res, 200));
    }
  }
}
