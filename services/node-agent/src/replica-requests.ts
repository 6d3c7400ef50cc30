/**
 * Day-2 requests the scheduler forwards to this node (`nfv.v1.internal.nodes.<n>.logs` / `.exec`): a replica's
 * container output, and a command run in its container, through the guest agent (gRPC ReadLogs / ExecProcess).
 * Bounded: at most LOGS_MAX_LINES lines and LOGS_MAX_BYTES, exec time-limited (EXEC_MAX_TIMEOUT_MS) with stdout and
 * stderr cut at EXEC_OUTPUT_CAP_BYTES each. The argv goes to the guest agent as a list (never through a shell here).
 */
import { JSONCodec, type NatsConnection, type Subscription } from 'nats';
import type { Logger } from 'pino';
import {
  EXEC_MAX_TIMEOUT_MS,
  EXEC_OUTPUT_CAP_BYTES,
  InvalidArgumentError,
  LOGS_MAX_BYTES,
  LOGS_MAX_LINES,
  NotFoundError,
  asAppError,
  fromClient,
  internalSubjects,
  type Envelope,
  type ExecResult,
  type NodeExecRequest,
  type NodeLogsRequest,
  type NodeMigrateRequest,
} from '@edgenfv/contracts';
import type { SandboxManager } from './sandbox/manager.js';

const jc = JSONCodec();

function cap(s: string, bytes: number): { text: string; cut: boolean } {
  const b = Buffer.from(s, 'utf8');
  return b.length <= bytes ? { text: s, cut: false } : { text: b.subarray(0, bytes).toString('utf8'), cut: true };
}

export class ReplicaRequests {
  private subs: Subscription[] = [];
  constructor(
    private readonly nodeId: string,
    private readonly nc: NatsConnection,
    private readonly manager: SandboxManager,
    private readonly log: Logger,
  ) {}

  start(): void {
    this.serve(internalSubjects.logs(this.nodeId), (req) => this.logs(req as NodeLogsRequest));
    this.serve(internalSubjects.exec(this.nodeId), (req) => this.exec(req as NodeExecRequest));
    // live migration, driven by the scheduler's leader (sandbox/migration.ts)
    this.serve(internalSubjects.migrate(this.nodeId), (req) => this.manager.migration.handle(req as NodeMigrateRequest));
  }

  stop(): void {
    for (const s of this.subs) s.unsubscribe();
    this.subs = [];
  }

  private serve(subject: string, fn: (req: unknown) => Promise<unknown>): void {
    this.subs.push(
      this.nc.subscribe(subject, {
        callback: (err, msg) => {
          // a request has an inbox reply (a JetStream delivery pointed here by some consumer has not: docs/security.md)
          if (err || !msg.reply || !fromClient(msg.subject, msg.reply, msg.headers?.code)) return;
          void (async () => {
            let reply: Envelope<unknown>;
            try {
              reply = { ok: true, result: await fn(jc.decode(msg.data)) };
            } catch (e) {
              const ae = asAppError(e);
              if (ae.code === 'INTERNAL') this.log.warn({ err: e, subject }, 'replica request failed');
              reply = { ok: false, error: ae.toBody() };
            }
            msg.respond(jc.encode(reply));
          })();
        },
      }),
    );
  }

  /** The replica's sandbox and container; NOT_FOUND when this node does not run it. */
  private find(tenantId: unknown, allocId: unknown): { sandboxId: string; containerId: string } {
    if (typeof tenantId !== 'string' || typeof allocId !== 'string') throw new InvalidArgumentError('tenantId and allocId are required');
    const r = this.manager.replicas().get(allocId);
    if (!r || r.sandbox.tenantId !== tenantId || r.replica.state !== 'running') throw new NotFoundError(`replica ${allocId} does not run on node ${this.nodeId}`);
    return { sandboxId: r.sandbox.sandboxId, containerId: r.replica.containerId };
  }

  private async logs(req: NodeLogsRequest): Promise<{ lines: string[]; truncated?: boolean }> {
    const { sandboxId, containerId } = this.find(req?.tenantId, req?.allocId);
    const tail = Math.min(Math.max(1, Number(req.tailLines) || 1), LOGS_MAX_LINES);
    const lines = await (await this.manager.guestSession(sandboxId)).logs(containerId, tail);
    // newest last: keep the end within the byte cap
    let bytes = 0;
    let from = lines.length;
    while (from > 0 && bytes + Buffer.byteLength(lines[from - 1]!) + 1 <= LOGS_MAX_BYTES) bytes += Buffer.byteLength(lines[--from]!) + 1;
    return from > 0 ? { lines: lines.slice(from), truncated: true } : { lines };
  }

  private async exec(req: NodeExecRequest): Promise<ExecResult> {
    const { sandboxId, containerId } = this.find(req?.tenantId, req?.allocId);
    if (!Array.isArray(req.command) || req.command.length === 0 || req.command.some((c) => typeof c !== 'string')) {
      throw new InvalidArgumentError([{ field: 'command', message: 'must be a non-empty list of strings' }]);
    }
    const timeoutMs = Math.min(Math.max(1, Number(req.timeoutMs) || 1), EXEC_MAX_TIMEOUT_MS);
    const r = await (await this.manager.guestSession(sandboxId)).exec(containerId, req.command, timeoutMs);
    const out = cap(r.stdout, EXEC_OUTPUT_CAP_BYTES);
    const err = cap(r.stderr, EXEC_OUTPUT_CAP_BYTES);
    return { exitCode: r.exitCode, stdout: out.text, stderr: err.text, ...(out.cut || err.cut ? { truncated: true } : {}) };
  }
}
