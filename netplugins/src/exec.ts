/** Runs a host command (ip, vppctl, ovs-vsctl, nsenter): the one place the OS ports shell out. */
import { spawn } from 'node:child_process';
import { AppError } from '@edgenfv/contracts';

export class ExecError extends AppError {
  constructor(
    readonly argv: readonly string[],
    readonly exitCode: number | null,
    readonly stderr: string,
  ) {
    super('INTERNAL', `${argv.join(' ')} failed (exit ${exitCode}): ${stderr.trim().split('\n').slice(-3).join(' | ')}`, {
      details: { argv, exitCode, stderr },
    });
  }
}

export interface ExecResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** A command runner port: tests of renderers (VPP, OVS) pass a recorder. */
export type Runner = (argv: readonly string[], input?: string) => Promise<ExecResult>;

export const runProcess: Runner = (argv, input) =>
  new Promise((resolve, reject) => {
    const child = spawn(argv[0]!, argv.slice(1), { stdio: ['pipe', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (b: Buffer) => out.push(b));
    child.stderr.on('data', (b: Buffer) => err.push(b));
    child.on('error', reject);
    child.on('close', (code) =>
      resolve({ code, stdout: Buffer.concat(out).toString('utf8'), stderr: Buffer.concat(err).toString('utf8') }),
    );
    child.stdin.on('error', () => undefined);
    child.stdin.end(input ?? '');
  });

export async function mustRun(run: Runner, argv: readonly string[], input?: string): Promise<string> {
  const r = await run(argv, input);
  if (r.code !== 0) throw new ExecError(argv, r.code, r.stderr || r.stdout);
  return r.stdout;
}

/** Quotes one argument for /bin/sh. */
export function shQuote(s: string): string {
  return /^[A-Za-z0-9_@%+=:,./-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`;
}

/**
 * A Runner backed by one long-lived /bin/sh in the host netns: each call is one fork+exec by that small shell
 * instead of a spawn by this (large) Node.js process — about a millisecond instead of three to five. Output is
 * stdout and stderr merged, in order (returned as `stdout`). The shell pins no namespace: `ip -n <ns>` enters the
 * netns only in its own short-lived process.
 */
export class ShellRunner {
  private proc: import('node:child_process').ChildProcess | null = null;
  private buf = '';
  private seq = 0;
  private waiting: { marker: string; resolve: (r: ExecResult) => void } | null = null;
  private chain: Promise<unknown> = Promise.resolve();

  private start(): import('node:child_process').ChildProcess {
    const p = spawn('/bin/sh', [], { stdio: ['pipe', 'pipe', 'ignore'] });
    this.buf = '';
    p.stdout!.setEncoding('utf8');
    p.stdout!.on('data', (d: string) => {
      this.buf += d;
      const w = this.waiting;
      if (!w) return;
      const i = this.buf.indexOf(w.marker);
      if (i < 0) return;
      const nl = this.buf.indexOf('\n', i);
      if (nl < 0) return;
      const code = Number(this.buf.slice(i + w.marker.length, nl).trim());
      const text = this.buf.slice(0, i);
      this.buf = this.buf.slice(nl + 1);
      this.waiting = null;
      w.resolve({ code, stdout: text.endsWith('\n') ? text.slice(0, -1) : text, stderr: '' });
    });
    p.on('close', () => {
      if (this.proc === p) this.proc = null;
      const w = this.waiting;
      this.waiting = null;
      w?.resolve({ code: null, stdout: this.buf, stderr: 'the helper shell exited' });
    });
    p.stdin!.on('error', () => undefined);
    p.unref();
    (p.stdin as unknown as { unref?: () => void }).unref?.();
    (p.stdout as unknown as { unref?: () => void }).unref?.();
    this.proc = p;
    return p;
  }

  readonly run: Runner = (argv, input) => this.runWith(argv, input);

  /**
   * Like `run`; `env` is added to the command's environment (shell assignments: keys must be identifiers), and
   * `discardStderr` drops stderr instead of merging it (for tools whose stdout is JSON).
   */
  runWith(argv: readonly string[], input?: string, opts: { env?: Readonly<Record<string, string | undefined>>; discardStderr?: boolean } = {}): Promise<ExecResult> {
    const go = () =>
      new Promise<ExecResult>((resolve) => {
        const p = this.proc ?? this.start();
        const n = this.seq++;
        const marker = `__NP_END_${process.pid}_${n} `;
        const eof = `__NP_EOF_${process.pid}_${n}`;
        const assigns = Object.entries(opts.env ?? {})
          .filter(([k, v]) => v !== undefined && /^[A-Za-z_][A-Za-z0-9_]*$/.test(k))
          .map(([k, v]) => `${k}=${shQuote(v!)} `)
          .join('');
        const cmd = assigns + argv.map(shQuote).join(' ');
        const stdin = input !== undefined ? ` <<'${eof}'\n${input.endsWith('\n') ? input : `${input}\n`}${eof}` : ' </dev/null';
        const out = p.stdout as unknown as { ref?: () => void; unref?: () => void };
        out.ref?.();
        p.ref();
        this.waiting = {
          marker,
          resolve: (r) => {
            out.unref?.();
            p.unref();
            resolve(r);
          },
        };
        // newline before the marker so it starts a line; the marker carries the exit code
        p.stdin!.write(`${cmd} ${opts.discardStderr ? '2>/dev/null' : '2>&1'}${stdin}\nprintf '\\n${marker}%s\\n' "$?"\n`);
      });
    const next = this.chain.then(go, go);
    this.chain = next.catch(() => undefined);
    return next;
  }

  close(): void {
    this.proc?.stdin?.end();
    this.proc = null;
  }
}
