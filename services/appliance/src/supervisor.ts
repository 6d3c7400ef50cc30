/**
 * Runs one service as a child process, waits until it answers its health URL, restarts it with backoff when it
 * dies on its own, and stops it (SIGTERM, then SIGKILL after a grace) on request.
 */
import type { ChildProcess } from 'node:child_process';
import { spawnTied } from '@edgenfv/nats-launcher';
import type { Logger } from '@edgenfv/telemetry';

export interface ServiceSpec {
  name: string;
  script: string;
  env: Record<string, string>;
  /** Answers 200 once the service serves. */
  healthUrl: string;
  readyTimeoutMs?: number;
}

export class Supervised {
  private child: ChildProcess | undefined;
  private stopping = false;
  private restarts: number[] = [];
  private exited: Promise<void> = Promise.resolve();

  constructor(
    readonly spec: ServiceSpec,
    private readonly logger: Logger,
    private readonly onFatal: (why: string) => void,
  ) {}

  get pid(): number | undefined {
    return this.child?.pid;
  }

  async start(): Promise<void> {
    this.spawnChild();
    await this.waitReady();
  }

  private spawnChild(): void {
    const child = spawnTied(process.execPath, [this.spec.script], {
      // its own process group: a Ctrl-C in the terminal reaches the appliance only, which stops services in order
      detached: true,
      env: { ...process.env, ...this.spec.env },
      stdio: ['ignore', 'inherit', 'inherit'],
    });
    this.child = child;
    this.exited = new Promise<void>((resolve) => {
      child.once('exit', (code, signal) => {
        resolve();
        if (this.stopping) return;
        this.logger.error({ service: this.spec.name, code, signal }, 'service exited unexpectedly');
        const now = Date.now();
        this.restarts = this.restarts.filter((t) => now - t < 60_000);
        if (this.restarts.length >= 5) {
          this.onFatal(`${this.spec.name} exited 5 times within a minute`);
          return;
        }
        this.restarts.push(now);
        const backoffMs = 500 * 2 ** (this.restarts.length - 1);
        setTimeout(() => {
          if (this.stopping) return;
          this.logger.info({ service: this.spec.name, backoffMs }, 'restarting service');
          this.spawnChild();
        }, backoffMs).unref();
      });
    });
  }

  private async waitReady(): Promise<void> {
    const until = Date.now() + (this.spec.readyTimeoutMs ?? 60_000);
    for (;;) {
      if (this.child?.exitCode !== null && this.child?.exitCode !== undefined) {
        throw new Error(`${this.spec.name} exited with ${this.child.exitCode} while starting`);
      }
      try {
        const res = await fetch(this.spec.healthUrl, { signal: AbortSignal.timeout(1_000) });
        if (res.ok) return;
      } catch {
        /* not yet */
      }
      if (Date.now() > until) throw new Error(`${this.spec.name} did not answer ${this.spec.healthUrl} in time`);
      await new Promise((r) => setTimeout(r, 150));
    }
  }

  async stop(graceMs = 15_000): Promise<void> {
    this.stopping = true;
    const child = this.child;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    child.kill('SIGTERM');
    const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
    await this.exited;
    clearTimeout(timer);
  }
}
