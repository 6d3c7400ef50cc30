/**
 * The `edgenfv` command tree (commander). Each action connects with connect.json (or the flags), calls one
 * ApiClient method, and prints the result; failures are printed by `main` and mapped to exit codes.
 */
import { readFileSync } from 'node:fs';
import { Command, InvalidArgumentError as CommanderArgError, Option } from 'commander';
import { parse as parseYaml } from 'yaml';
import { connect, type NatsConnection, type NatsError } from 'nats';
import {
  AppError,
  InvalidArgumentError,
  PermissionDeniedError,
  UnavailableError,
  checkVnfd,
  type OpOcc,
  type Quota,
  type Vnfd,
} from '@edgenfv/contracts';
import { ApiClient, edgenfvHome, loadConnectInfo, natsOptions, tenantDashboardToken } from '@edgenfv/api-client';
import { OUTPUT_FORMATS, render, renderEvent, type Kind, type OutputFormat } from './format.js';
import { addDpdkConfigCommands } from './dpdk-config-cmd.js';
import { addCheckCommand } from './check-cmd.js';
import { EventsCursor } from './events-cursor.js';
import { followOpOcc } from './progress.js';

export interface CliIo {
  stdout: { write(s: string): unknown };
  stderr: { write(s: string): unknown };
  env: NodeJS.ProcessEnv;
  cwd: string;
  readStdin: () => string;
  /** Registers a handler for SIGINT/SIGTERM; returns a function that removes it. */
  onInterrupt: (fn: () => void) => () => void;
}

interface GlobalOpts {
  server?: string;
  user?: string;
  pass?: string;
  token?: string;
  output: OutputFormat;
  timeout: number;
}

function positiveInt(v: string): number {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 0) throw new CommanderArgError('must be an integer >= 0');
  return n;
}

/** A NATS connection failure as an AppError (UNAVAILABLE, or PERMISSION_DENIED for credentials). */
function connectError(err: unknown, servers: string[]): AppError {
  const e = err as NatsError;
  if (e.code === 'AUTHORIZATION_VIOLATION' || /authoriz|authentic/i.test(e.message ?? '')) {
    return new PermissionDeniedError(`NATS refused the credentials (${servers.join(', ')}): check --user/--pass/--token or connect.json`);
  }
  return new UnavailableError(`cannot connect to ${servers.join(', ')}: ${e.message ?? String(err)}`, { cause: err });
}

export function buildProgram(io: CliIo): Command {
  const program = new Command('edgenfv');
  program
    .description('Operate an edgenfv appliance over its message API (reads $EDGENFV_CONNECT, else $EDGENFV_HOME/connect.json).')
    .exitOverride()
    .configureOutput({ writeOut: (s) => io.stdout.write(s), writeErr: (s) => io.stderr.write(s) })
    .showHelpAfterError()
    .option('--server <urls>', 'NATS server URL(s), comma separated (overrides connect.json)')
    .option('--user <user>', 'NATS user')
    .option('--pass <pass>', 'NATS password')
    .option('--token <token>', 'NATS token')
    .addOption(new Option('-o, --output <format>', 'output format').choices([...OUTPUT_FORMATS]).default('table'))
    .addOption(new Option('--timeout <ms>', 'per-request timeout in ms').argParser(positiveInt).default(5000));

  const globals = (cmd: Command): GlobalOpts => cmd.optsWithGlobals<GlobalOpts>();
  const print = (cmd: Command, value: unknown, kind: Kind, single = false): void => {
    io.stdout.write(render(value, kind, globals(cmd).output, { single }));
  };

  /** Connects, runs fn with a client, always closes the connection. */
  async function withClient<T>(cmd: Command, fn: (c: ApiClient, nc: NatsConnection) => Promise<T>): Promise<T> {
    const g = globals(cmd);
    const info = loadConnectInfo(
      {
        ...(g.server !== undefined ? { server: g.server } : {}),
        ...(g.user !== undefined ? { user: g.user } : {}),
        ...(g.pass !== undefined ? { pass: g.pass } : {}),
        ...(g.token !== undefined ? { token: g.token } : {}),
      },
      io.env,
      io.cwd,
    );
    let nc: NatsConnection;
    try {
      nc = await connect({ ...natsOptions(info, { name: 'edgenfv-cli' }), timeout: g.timeout });
    } catch (err) {
      throw connectError(err, info.servers);
    }
    try {
      return await fn(new ApiClient(nc, { timeoutMs: g.timeout }), nc);
    } finally {
      await nc.close().catch(() => undefined);
    }
  }

  /**
   * Follows the operation occurrence to COMPLETED/FAILED/ROLLED_BACK (or FAILED_TEMP), its steps shown on stderr as they happen
   * (progress.ts); prints it, and throws its error when it did not complete.
   */
  async function waitFor(c: ApiClient, nc: NatsConnection, tenant: string, opOccId: string, cmd: Command): Promise<OpOcc> {
    const ac = new AbortController();
    const off = io.onInterrupt(() => ac.abort());
    let o: OpOcc;
    try {
      o = await followOpOcc(c, nc, tenant, opOccId, io.stderr, ac.signal);
    } finally {
      off();
    }
    print(cmd, o, 'opocc', true);
    if (o.operationState !== 'COMPLETED') {
      const e = o.error ?? { code: 'INTERNAL' as const, message: `operation ${o.operation} ended ${o.operationState}` };
      throw new AppError(e.code, `${o.operation} ${o.id} ended ${o.operationState}: ${e.message}`, { details: e.details });
    }
    return o;
  }

  /** The operator's dashboard (URL and token) from the connect file, when it has them. */
  const operatorDashboard = (): { url: string; token: string } | undefined => {
    try {
      const info = loadConnectInfo({}, io.env, io.cwd);
      return info.dashboardToken && info.dashboardUrl ? { url: info.dashboardUrl, token: info.dashboardToken } : undefined;
    } catch {
      return undefined;
    }
  };

  const tenantOpt = (): Option =>
    new Option('-t, --tenant <id>', 'tenant id (default: $EDGENFV_TENANT)').makeOptionMandatory(!io.env.EDGENFV_TENANT).default(io.env.EDGENFV_TENANT);
  const waitOpt = (): Option => new Option('--wait', 'wait for the operation occurrence to end; exit non-zero when it fails');

  // ---- tenants ----
  const tenants = program.command('tenants').description('operator: tenants and their quotas');
  tenants
    .command('create <id>')
    .description('create a tenant')
    .option('--display-name <name>')
    .option('--quota-vcpus <n>', 'vCPU quota', positiveInt)
    .option('--quota-memory-mib <n>', 'memory quota (MiB)', positiveInt)
    .option('--quota-vfs <n>', 'SR-IOV VF quota', positiveInt)
    .option('--quota-vnfs <n>', 'VNF quota', positiveInt)
    .action(async (id: string, o: Record<string, unknown>, cmd: Command) => {
      const quota: Quota = {};
      if (o.quotaVcpus !== undefined) quota.vcpus = o.quotaVcpus as number;
      if (o.quotaMemoryMib !== undefined) quota.memoryMiB = o.quotaMemoryMib as number;
      if (o.quotaVfs !== undefined) quota.vfs = o.quotaVfs as number;
      if (o.quotaVnfs !== undefined) quota.vnfs = o.quotaVnfs as number;
      const req = {
        id,
        ...(o.displayName !== undefined ? { displayName: o.displayName as string } : {}),
        ...(Object.keys(quota).length ? { quota } : {}),
      };
      print(cmd, await withClient(cmd, (c) => c.createTenant(req)), 'tenant');
    });
  tenants.command('get <id>').description('a tenant with its usage').action(async (id: string, _o, cmd: Command) => {
    print(cmd, await withClient(cmd, (c) => c.getTenant(id)), 'tenant');
  });
  tenants.command('list').description('every tenant').action(async (_o, cmd: Command) => {
    print(cmd, await withClient(cmd, (c) => c.listTenants()), 'tenant');
  });
  tenants
    .command('credentials <id>')
    .description("issue NATS credentials confined to the tenant's subjects: a connect file on stdout (use it with EDGENFV_CONNECT=<file>)")
    .option('--rotate', 'revoke every earlier credential of the tenant (their connections are closed)')
    .action(async (id: string, o: { rotate?: boolean }, cmd: Command) => {
      const dash = operatorDashboard();
      const { creds, dashboardToken } = await withClient(cmd, async (c) => ({
        creds: await c.tenantCredentials(id, o.rotate === true),
        // the tenant's dashboard token, issued alongside (when this connect file has the operator's dashboard token);
        // read after the rotation: a rotated tenant's earlier token no longer works
        dashboardToken: dash ? tenantDashboardToken(dash.token, await c.getTenant(id)) : undefined,
      }));
      // always the connect-file JSON, whatever --output says: it is meant for `> acme.json`
      io.stdout.write(JSON.stringify({ ...creds, ...(dash && dashboardToken ? { dashboardUrl: dash.url, dashboardToken } : {}) }, null, 2) + '\n');
    });
  tenants
    .command('dashboard-token <id>')
    .description("the tenant's dashboard token (sees and acts on its own tenant only), from the operator's dashboardToken in connect.json")
    .action(async (id: string, _o, cmd: Command) => {
      const dash = operatorDashboard();
      if (!dash) throw new InvalidArgumentError([{ field: 'connect.json', message: 'has no dashboardToken/dashboardUrl: use the operator\'s connect.json of an appliance with a dashboard' }]);
      const tenant = await withClient(cmd, (c) => c.getTenant(id));
      const token = tenantDashboardToken(dash.token, tenant);
      const out = { tenantId: id, dashboardUrl: dash.url, dashboardToken: token, open: `${dash.url}#token=${token}` };
      io.stdout.write(globals(cmd).output === 'table' ? `${out.open}\n` : JSON.stringify(out) + '\n');
    });
  tenants.command('delete <id>').description('delete a tenant (refused while it has VNFs; revokes its credentials)').action(async (id: string, _o, cmd: Command) => {
    await withClient(cmd, (c) => c.deleteTenant(id));
    print(cmd, { deleted: id }, 'plain');
  });

  // ---- nodes ----
  const nodes = program.command('nodes').description('operator: nodes, capacity, cordon and drain');
  nodes.command('list').description('every node').action(async (_o, cmd: Command) => {
    print(cmd, await withClient(cmd, (c) => c.listNodes()), 'node');
  });
  for (const [name, desc] of [
    ['get', 'a node: capacity, allocated, health, sandboxes'],
    ['cordon', 'stop placing new replicas on a node'],
    ['uncordon', 'allow placements on a node again'],
  ] as const) {
    nodes.command(`${name} <id>`).description(desc).action(async (id: string, _o, cmd: Command) => {
      const n = await withClient(cmd, (c) => (name === 'get' ? c.getNode(id) : name === 'cordon' ? c.cordonNode(id) : c.uncordonNode(id)));
      print(cmd, n, 'node', name === 'get');
    });
  }
  nodes.command('drain <id>').description('cordon a node and move its VNF replicas away').action(async (id: string, _o, cmd: Command) => {
    print(cmd, await withClient(cmd, (c) => c.drainNode(id)), 'plain');
  });

  // ---- vnfs ----
  const vnfs = program.command('vnfs').description('tenant: VNF lifecycle');
  vnfs
    .command('instantiate')
    .description('instantiate a VNF from a VNFD file (YAML or JSON; "-" reads stdin)')
    .addOption(tenantOpt())
    .requiredOption('-f, --file <path>', 'VNFD file')
    .option('--request-id <id>', 'idempotency key: the same id returns the first reply')
    .addOption(waitOpt())
    .action(async (o: { tenant: string; file: string; requestId?: string; wait?: boolean }, cmd: Command) => {
      const descriptor = readVnfd(o.file, io);
      await withClient(cmd, async (c, nc) => {
        const r = await c.instantiate(o.tenant, descriptor, o.requestId);
        if (!o.wait) return print(cmd, r, 'plain');
        await waitFor(c, nc, o.tenant, r.opOccId, cmd);
      });
    });
  vnfs.command('get <id>').description('a VNF with its replicas and interfaces').addOption(tenantOpt())
    .action(async (id: string, o: { tenant: string }, cmd: Command) => {
      print(cmd, await withClient(cmd, (c) => c.getVnf(o.tenant, id)), 'vnf', true);
    });
  vnfs.command('list').description("the tenant's VNFs").addOption(tenantOpt())
    .action(async (o: { tenant: string }, cmd: Command) => {
      print(cmd, await withClient(cmd, (c) => c.listVnfs(o.tenant)), 'vnf');
    });
  vnfs.command('scale <id>').description('change the number of replicas').addOption(tenantOpt())
    .requiredOption('-r, --replicas <n>', 'replicas wanted', positiveInt)
    .option('--request-id <id>').addOption(waitOpt())
    .action(async (id: string, o: { tenant: string; replicas: number; requestId?: string; wait?: boolean }, cmd: Command) => {
      await withClient(cmd, async (c, nc) => {
        const r = await c.scale(o.tenant, { id, replicas: o.replicas, ...(o.requestId ? { requestId: o.requestId } : {}) });
        if (!o.wait) return print(cmd, r, 'plain');
        await waitFor(c, nc, o.tenant, r.opOccId, cmd);
      });
    });
  vnfs.command('heal <id>').description('restart a VNF (or one replica)').addOption(tenantOpt())
    .option('--replica <n>', 'only this replica', positiveInt)
    .option('--request-id <id>').addOption(waitOpt())
    .action(async (id: string, o: { tenant: string; replica?: number; requestId?: string; wait?: boolean }, cmd: Command) => {
      await withClient(cmd, async (c, nc) => {
        const r = await c.heal(o.tenant, {
          id,
          ...(o.replica !== undefined ? { replica: o.replica } : {}),
          ...(o.requestId ? { requestId: o.requestId } : {}),
        });
        if (!o.wait) return print(cmd, r, 'plain');
        await waitFor(c, nc, o.tenant, r.opOccId, cmd);
      });
    });
  vnfs.command('terminate <id>').description('terminate a VNF').addOption(tenantOpt())
    .addOption(new Option('--mode <mode>').choices(['GRACEFUL', 'FORCEFUL']))
    .option('--request-id <id>').addOption(waitOpt())
    .action(async (id: string, o: { tenant: string; mode?: 'GRACEFUL' | 'FORCEFUL'; requestId?: string; wait?: boolean }, cmd: Command) => {
      await withClient(cmd, async (c, nc) => {
        const r = await c.terminate(o.tenant, {
          id,
          ...(o.mode ? { mode: o.mode } : {}),
          ...(o.requestId ? { requestId: o.requestId } : {}),
        });
        if (!o.wait) return print(cmd, r, 'plain');
        await waitFor(c, nc, o.tenant, r.opOccId, cmd);
      });
    });

  vnfs.command('operate <id>').description("stop or start a VNF's containers (VM, MACs and addresses are kept)").addOption(tenantOpt())
    .addOption(new Option('--state <state>', 'the state to change to').choices(['STARTED', 'STOPPED']).makeOptionMandatory())
    .option('--request-id <id>').addOption(waitOpt())
    .action(async (id: string, o: { tenant: string; state: 'STARTED' | 'STOPPED'; requestId?: string; wait?: boolean }, cmd: Command) => {
      await withClient(cmd, async (c, nc) => {
        const r = await c.operate(o.tenant, { id, changeStateTo: o.state, ...(o.requestId ? { requestId: o.requestId } : {}) });
        if (!o.wait) return print(cmd, r, 'plain');
        await waitFor(c, nc, o.tenant, r.opOccId, cmd);
      });
    });
  vnfs.command('logs <id>').description("a replica's container output (stdout, then stderr), newest last").addOption(tenantOpt())
    .option('--replica <n>', 'replica (default 0)', positiveInt)
    .option('--tail <n>', 'last n lines (default 100, at most 5000)', positiveInt)
    .action(async (id: string, o: { tenant: string; replica?: number; tail?: number }, cmd: Command) => {
      const r = await withClient(cmd, (c) =>
        c.logs(o.tenant, { id, ...(o.replica !== undefined ? { replica: o.replica } : {}), ...(o.tail !== undefined ? { tailLines: o.tail } : {}) }),
      );
      if (globals(cmd).output === 'table') io.stdout.write(r.lines.map((l) => `${l}\n`).join(''));
      else print(cmd, r, 'plain');
    });
  vnfs.command('exec <id> <command...>').description("run a command in a replica's container (time-limited, output capped); exits with its code")
    .addOption(tenantOpt())
    .option('--replica <n>', 'replica (default 0)', positiveInt)
    .option('--exec-timeout <ms>', 'time limit (default 10000, at most 120000)', positiveInt)
    .action(async (id: string, command: string[], o: { tenant: string; replica?: number; execTimeout?: number }, cmd: Command) => {
      const g = globals(cmd);
      const r = await withClient(cmd, (_c, nc) =>
        new ApiClient(nc, { timeoutMs: Math.max(g.timeout, (o.execTimeout ?? 10_000) + 15_000) }).exec(o.tenant, {
          id,
          command,
          ...(o.replica !== undefined ? { replica: o.replica } : {}),
          ...(o.execTimeout !== undefined ? { timeoutMs: o.execTimeout } : {}),
        }),
      );
      if (g.output === 'table') {
        io.stdout.write(r.stdout);
        io.stderr.write(r.stderr);
      } else print(cmd, r, 'plain');
      if (r.exitCode !== 0) process.exitCode = r.exitCode;
    });

  // ---- opoccs ----
  const opoccs = program.command('opoccs').description('tenant: operation occurrences');
  opoccs.command('get <id>').description('an operation occurrence with its steps and error').addOption(tenantOpt())
    .action(async (id: string, o: { tenant: string }, cmd: Command) => {
      print(cmd, await withClient(cmd, (c) => c.getOpOcc(o.tenant, id)), 'opocc', true);
    });
  opoccs.command('list').description("the tenant's operation occurrences, oldest first").addOption(tenantOpt())
    .option('--vnf <id>', "only this VNF's")
    .action(async (o: { tenant: string; vnf?: string }, cmd: Command) => {
      print(cmd, await withClient(cmd, (c) => c.listOpOccs(o.tenant, o.vnf)), 'opoccs');
    });
  for (const [action, desc] of [
    ['retry', 'FAILED_TEMP -> PROCESSING: try again (failed replicas are placed anew)'],
    ['rollback', 'FAILED_TEMP -> ROLLING_BACK -> ROLLED_BACK: undo what it did (INSTANTIATE, SCALE, OPERATE)'],
    ['fail', 'FAILED_TEMP -> FAILED: give up and release what it held'],
  ] as const) {
    opoccs.command(`${action} <id>`).description(desc).addOption(tenantOpt()).addOption(waitOpt())
      .action(async (id: string, o: { tenant: string; wait?: boolean }, cmd: Command) => {
        await withClient(cmd, async (c, nc) => {
          const r = await c.resolveOpOcc(o.tenant, id, action);
          if (!o.wait || action === 'fail') return print(cmd, r, 'opocc', true);
          await waitFor(c, nc, o.tenant, id, cmd);
        });
      });
  }

  // ---- events ----
  program
    .command('events')
    .description(`replay the tenant's notifications (stream EDGENFV_EVENTS); --follow keeps printing new ones`)
    .addOption(tenantOpt())
    .option('--vnf <id>', "only this VNF's events")
    .option('-F, --follow', 'keep waiting for new events (Ctrl-C stops); resumes after the last one a previous --follow printed')
    .option('--from-start', 'with --follow: replay everything instead of resuming')
    .action(async (o: { tenant: string; vnf?: string; follow?: boolean; fromStart?: boolean }, cmd: Command) => {
      const format = globals(cmd).output;
      const cursor = new EventsCursor(edgenfvHome(io.env, io.cwd), `${o.tenant}/${o.vnf ?? '*'}`);
      const after = o.follow && !o.fromStart ? cursor.get() : undefined;
      if (after !== undefined) io.stderr.write(`resuming after event #${after} (--from-start replays all)\n`);
      await withClient(cmd, async (c) => {
        const ac = new AbortController();
        const off = io.onInterrupt(() => ac.abort());
        try {
          for await (const e of c.events(o.tenant, { follow: !!o.follow, signal: ac.signal, ...(o.vnf ? { vnfId: o.vnf } : {}), ...(after !== undefined ? { afterSeq: after } : {}) })) {
            io.stdout.write(renderEvent(e, format));
            if (o.follow) cursor.set(e.seq);
          }
        } finally {
          off();
          cursor.flush();
        }
      });
    });

  addDpdkConfigCommands(program, io);
  addCheckCommand(program, io);
  return program;
}

/** Reads and checks a VNFD (YAML or JSON) before anything is sent: every issue names its field. */
export function readVnfd(path: string, io: Pick<CliIo, 'readStdin'>): Vnfd {
  let text: string;
  try {
    text = path === '-' ? io.readStdin() : readFileSync(path, 'utf8');
  } catch (err) {
    throw new InvalidArgumentError([{ field: '--file', message: `cannot read ${path}: ${(err as Error).message}` }]);
  }
  let doc: unknown;
  try {
    doc = parseYaml(text);
  } catch (err) {
    throw new InvalidArgumentError([{ field: '--file', message: `${path} is not YAML/JSON: ${(err as Error).message}` }]);
  }
  const issues = checkVnfd(doc, 'descriptor');
  if (issues.length > 0) throw new InvalidArgumentError(issues);
  return doc as Vnfd;
}
