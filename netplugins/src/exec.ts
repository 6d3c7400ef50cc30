/** Runs a host command (ip, vppctl, ovs-vsctl, nsenter): the one place the OS ports shell out. */
import { spawn, type ChildProcess } from 'node:child_process';
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

/** One answer of a ChildSession: what the child said before the marker, the rest of the answer after the marker, and
 * whether the child exited first (then `text` is all it had said). */
export interface SessionAnswer {
  text: string;
  tail: string;
  died: boolean;
}

/**
 * One long-lived child process fed request by request on its stdin; each request makes it print a marker, which
 * ends the answer. While an answer is due the child holds the event loop, idle it does not (it also ends with this
 * process). A child that exited is started again by the next request.
 */
export class ChildSession {
  private proc: ChildProcess | null = null;
  private buf = '';
  private waiting: { marker: string; resolve: (a: SessionAnswer) => void } | null = null;
  private chain: Promise<unknown> = Promise.resolve();

  constructor(
    private readonly spawnChild: () => ChildProcess,
    /** Where the answer whose marker starts at `at` ends (the index of its last newline), or -1 until it has all arrived. */
    private readonly answerEnd: (buf: string, at: number) => number,
    /** Called with every (re)start, before the first request to the new child. */
    private readonly onStart: () => void = () => undefined,
  ) {}

  /** The running child, started when there is none. */
  child(): ChildProcess {
    return this.proc ?? this.start();
  }

  private start(): ChildProcess {
    const p = this.spawnChild();
    this.onStart();
    this.buf = '';
    p.stdout!.setEncoding('utf8');
    p.stdout!.on('data', (d: string) => {
      this.buf += d;
      const w = this.waiting;
      if (!w) return;
      const i = this.buf.indexOf(w.marker);
      if (i < 0) return;
      const end = this.answerEnd(this.buf, i);
      if (end < 0) return;
      const text = this.buf.slice(0, i);
      const tail = this.buf.slice(i + w.marker.length, end);
      this.buf = this.buf.slice(end + 1);
      this.waiting = null;
      w.resolve({ text, tail, died: false });
    });
    p.on('close', () => {
      if (this.proc === p) this.proc = null;
      const w = this.waiting;
      this.waiting = null;
      const text = this.buf;
      this.buf = '';
      w?.resolve({ text, tail: '', died: true });
    });
    p.stdin!.on('error', () => undefined);
    p.unref();
    (p.stdin as unknown as { unref?: () => void }).unref?.();
    (p.stdout as unknown as { unref?: () => void }).unref?.();
    this.proc = p;
    return p;
  }

  /** Writes `input` (which makes the child print `marker`) and resolves with the answer. One request at a time: see `serial`. */
  request(input: string, marker: string): Promise<SessionAnswer> {
    const p = this.child();
    const out = p.stdout as unknown as { ref?: () => void; unref?: () => void };
    out.ref?.(); // keep the event loop alive while an answer is due; idle, the process must not hold it
    p.ref(); // also the child itself: when it exits, its exit must be seen before the loop may end
    return new Promise<SessionAnswer>((resolve) => {
      this.waiting = {
        marker,
        resolve: (a) => {
          out.unref?.();
          p.unref();
          resolve(a);
        },
      };
      p.stdin!.write(input);
    });
  }

  /** Runs `fn` after every earlier `serial` call has settled (a failure does not stop the queue). */
  serial<T>(fn: () => Promise<T>): Promise<T> {
    const next = this.chain.then(fn, fn);
    this.chain = next.catch(() => undefined);
    return next;
  }

  close(): void {
    this.proc?.stdin?.end();
    this.proc = null;
  }
}

/**
 * A Runner backed by one long-lived /bin/sh in the host netns: each call is one fork+exec by that small shell
 * instead of a spawn by this (large) Node.js process — about a millisecond instead of three to five. Output is
 * stdout and stderr merged, in order (returned as `stdout`). The shell pins no namespace: `ip -n <ns>` enters the
 * netns only in its own short-lived process.
 */
export class ShellRunner {
  private readonly session = new ChildSession(
    () => spawn('/bin/sh', [], { stdio: ['pipe', 'pipe', 'ignore'] }),
    (buf, at) => buf.indexOf('\n', at), // the marker line carries the exit code
  );
  private seq = 0;

  readonly run: Runner = (argv, input) => this.runWith(argv, input);

  /**
   * Like `run`; `env` is added to the command's environment (shell assignments: keys must be identifiers), and
   * `discardStderr` drops stderr instead of merging it (for tools whose stdout is JSON).
   */
  runWith(argv: readonly string[], input?: string, opts: { env?: Readonly<Record<string, string | undefined>>; discardStderr?: boolean } = {}): Promise<ExecResult> {
    return this.session.serial(async () => {
      this.session.child();
      const n = this.seq++;
      const marker = `__NP_END_${process.pid}_${n} `;
      const eof = `__NP_EOF_${process.pid}_${n}`;
      const assigns = Object.entries(opts.env ?? {})
        .filter(([k, v]) => v !== undefined && /^[A-Za-z_][A-Za-z0-9_]*$/.test(k))
        .map(([k, v]) => `${k}=${shQuote(v!)} `)
        .join('');
      const cmd = assigns + argv.map(shQuote).join(' ');
      const stdin = input !== undefined ? ` <<'${eof}'\n${input.endsWith('\n') ? input : `${input}\n`}${eof}` : ' </dev/null';
      // newline before the marker so it starts a line; the marker carries the exit code
      const a = await this.session.request(`${cmd} ${opts.discardStderr ? '2>/dev/null' : '2>&1'}${stdin}\nprintf '\\n${marker}%s\\n' "$?"\n`, marker);
      if (a.died) return { code: null, stdout: a.text, stderr: 'the helper shell exited' };
      return { code: Number(a.tail.trim()), stdout: a.text.endsWith('\n') ? a.text.slice(0, -1) : a.text, stderr: '' };
    });
  }

  close(): void {
    this.session.close();
  }
}
