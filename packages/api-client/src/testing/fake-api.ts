/**
 * A small in-memory responder of the message API v1, for the CLI's and the dashboard's own tests (the real
 * server is the scheduler). It answers every subject of shared API.md with the real envelope, validates
 * requests with the real JSON Schemas of @edgenfv/contracts, keeps requestIds, and publishes events into a
 * real JetStream stream EDGENFV_EVENTS. Placement is trivial: one replica per uncordoned Ready node in turn;
 * with none, INSTANTIATE fails UNSCHEDULABLE with a reason per node.
 */
import { JSONCodec, RetentionPolicy, StorageType, type Msg, type NatsConnection, type Subscription } from 'nats';
import {
  UnavailableError,
  AlreadyExistsError,
  ConflictError,
  EVENTS_STREAM,
  NotFoundError,
  asAppError,
  parseApiSubject,
  subjects,
  validateRequest,
  InvalidArgumentError,
  type ErrorBody,
  type EventPayload,
  type NodeInventory,
  type NodeRecord,
  type OpOcc,
  type Operation,
  type Replica,
  type Tenant,
  type Vnf,
} from '@edgenfv/contracts';

const jc = JSONCodec<unknown>();

export interface FakeApiOptions {
  nodes?: NodeRecord[];
  /** Fixed clock for stable output. */
  now?: () => string;
}

export interface FakeApi {
  readonly nodes: Map<string, NodeRecord>;
  readonly tenants: Map<string, Tenant>;
  readonly vnfs: Map<string, Vnf>;
  readonly opoccs: Map<string, OpOcc>;
  /** Subjects of every request received, in order. */
  readonly received: string[];
  stop(): Promise<void>;
}

/** A node record with a plausible inventory (2 NUMA nodes, one SR-IOV PF). */
export function sampleNode(id: string, over: Partial<NodeRecord> = {}): NodeRecord {
  const inventory: NodeInventory = {
    nodeId: id,
    hostname: `${id}.edge`,
    labels: { site: 'edge-1' },
    cpuCount: 16,
    isolatedCpus: [2, 3, 4, 5, 10, 11, 12, 13],
    memoryMiB: 65536,
    numaNodes: [
      { id: 0, cpus: [0, 1, 2, 3, 4, 5, 6, 7], memoryMiB: 32768, hugepages: [{ sizeKiB: 2048, total: 1024, free: 1024 }] },
      { id: 1, cpus: [8, 9, 10, 11, 12, 13, 14, 15], memoryMiB: 32768, hugepages: [{ sizeKiB: 2048, total: 1024, free: 512 }] },
    ],
    sriovPfs: [
      { pciAddress: '0000:81:00.0', ifName: 'ens1f0', physnet: 'physnet1', numaNode: 1, totalVfs: 8, numVfs: 4, vfs: [] },
    ],
    dataplanes: [{ kind: 'vpp', numaNode: 1 }],
    hypervisors: [{ kind: 'qemu', path: '/usr/bin/qemu-system-x86_64', accel: 'kvm' }],
    kvm: true,
    agentVersion: '0.1.0',
  };
  return {
    id,
    inventory,
    health: 'Ready',
    cordoned: false,
    epoch: 1,
    registeredAt: '2026-01-01T00:00:00.000Z',
    lastHeartbeatAt: '2026-01-01T00:00:05.000Z',
    allocated: { vcpus: 0, memoryMiB: 0, vfs: 0, replicas: 0 },
    sandboxes: [],
    ...over,
  };
}

export async function startFakeApi(nc: NatsConnection, opts: FakeApiOptions = {}): Promise<FakeApi> {
  const now = opts.now ?? (() => new Date().toISOString());
  const nodes = new Map((opts.nodes ?? []).map((n) => [n.id, structuredClone(n)]));
  const tenants = new Map<string, Tenant>();
  const vnfs = new Map<string, Vnf>();
  const opoccs = new Map<string, OpOcc>();
  const requests = new Map<string, unknown>();
  const received: string[] = [];
  let seq = 0;
  const nextId = (p: string): string => `${p}-${String(++seq).padStart(4, '0')}`;

  const jsm = await nc.jetstreamManager();
  try {
    await jsm.streams.info(EVENTS_STREAM);
  } catch {
    await jsm.streams.add({
      name: EVENTS_STREAM,
      subjects: [subjects.eventsWildcard],
      retention: RetentionPolicy.Limits,
      storage: StorageType.File,
      max_msgs_per_subject: 10_000,
    });
  }
  const js = nc.jetstream();
  const publish = async (t: string, v: string, e: EventPayload): Promise<void> => {
    await js.publish(subjects.events(t, v), jc.encode(e));
  };

  const tenantOf = (id: string): Tenant => {
    const t = tenants.get(id);
    if (!t) throw new NotFoundError(`tenant "${id}" not found`);
    return t;
  };
  const vnfOf = (t: string, id: string): Vnf => {
    const v = vnfs.get(`${t}.${id}`);
    if (!v) throw new NotFoundError(`VNF "${id}" not found in tenant "${t}"`);
    return v;
  };
  const usage = (t: string): Tenant['usage'] => {
    const u = { vcpus: 0, memoryMiB: 0, vfs: 0, vnfs: 0 };
    for (const v of vnfs.values()) {
      if (v.tenantId !== t || v.instantiationState !== 'INSTANTIATED') continue;
      u.vnfs++;
      const running = v.replicas.filter((r) => r.state === 'RUNNING').length;
      u.vcpus += running * v.descriptor.resources.vcpus;
      u.memoryMiB += running * v.descriptor.resources.memoryMiB;
    }
    return u;
  };
  const newOpOcc = (t: string, vnfId: string, operation: Operation, requestId?: string, params?: Record<string, unknown>): OpOcc => {
    const at = now();
    // the fake keeps whatever params its caller gives (the scheduler types them per operation)
    const o = {
      id: nextId('op'),
      tenantId: t,
      vnfId,
      operation,
      operationState: 'STARTING',
      startTime: at,
      stateEnteredTime: at,
      steps: [{ at, message: `${operation} accepted` }],
      ...(requestId ? { requestId } : {}),
      ...(params ? { params } : {}),
    } as OpOcc;
    opoccs.set(`${t}.${o.id}`, o);
    return o;
  };
  const finish = async (o: OpOcc, error?: ErrorBody): Promise<void> => {
    o.operationState = error ? 'FAILED' : 'COMPLETED';
    o.stateEnteredTime = now();
    o.steps.push({ at: o.stateEnteredTime, message: error ? `failed: ${error.message}` : 'completed' });
    if (error) o.error = error;
    await publish(o.tenantId, o.vnfId, {
      type: 'OpOcc',
      opOccId: o.id,
      vnfId: o.vnfId,
      operation: o.operation,
      operationState: o.operationState,
      at: o.stateEnteredTime,
      ...(error ? { error } : {}),
    });
  };
  /** Places replicas [from, to) round-robin on uncordoned Ready nodes; returns an UNSCHEDULABLE error when none. */
  const place = async (v: Vnf, from: number, to: number): Promise<ErrorBody | undefined> => {
    const ready = [...nodes.values()].filter((n) => !n.cordoned && n.health === 'Ready').sort((a, b) => a.id.localeCompare(b.id));
    if (ready.length === 0) {
      // the scheduler's Explanation shape: per filter and reason, how many nodes it rejected
      const counts = new Map<string, { filter: string; reason: string; nodes: number }>();
      for (const n of nodes.values()) {
        const filter = n.cordoned ? 'cordon' : 'health';
        const reason = n.cordoned ? 'node is cordoned' : `node is ${n.health}`;
        const k = `${filter}|${reason}`;
        const c = counts.get(k) ?? { filter, reason, nodes: 0 };
        c.nodes++;
        counts.set(k, c);
      }
      const rejected = [...counts.values()];
      const message =
        nodes.size === 0
          ? 'no nodes registered'
          : `no feasible node among ${nodes.size}: ${rejected.map((r) => `${r.reason} (${r.nodes})`).join('; ')}`;
      for (let i = from; i < to; i++) {
        v.replicas.push({ index: i, state: 'FAILED', interfaces: [], message, updatedAt: now() });
      }
      return { code: 'UNSCHEDULABLE', message, details: { nodes: nodes.size, rejected, message } };
    }
    for (let i = from; i < to; i++) {
      const node = ready[i % ready.length];
      const r: Replica = {
        index: i,
        state: 'RUNNING',
        nodeId: node.id,
        sandboxId: `sb-${v.tenantId}-${node.id}`,
        allocId: nextId('alloc'),
        interfaces: (v.descriptor.interfaces ?? []).map((ifc, k) => ({
          name: ifc.name,
          type: ifc.type,
          ...(ifc.network ? { network: ifc.network } : {}),
          mac: `02:00:00:00:${String(i).padStart(2, '0')}:${String(k).padStart(2, '0')}`,
          ips: ifc.network ? [`10.0.${k}.${10 + i}/24`] : [],
          ...(ifc.type === 'vhostuser' ? { socketPath: `/run/edgenfv/vhost/${v.tenantId}-${v.name}-${i}-${ifc.name}.sock` } : {}),
        })),
        message: `placed on ${node.id}`,
        updatedAt: now(),
      };
      v.replicas.push(r);
      await publish(v.tenantId, v.id, { type: 'Replica', vnfId: v.id, replica: i, state: 'RUNNING', nodeId: node.id, at: r.updatedAt });
    }
    return undefined;
  };

  const idempotent = async (t: string, requestId: string | undefined, fn: () => Promise<unknown>): Promise<unknown> => {
    if (requestId === undefined) return fn();
    const key = `${t}.${requestId}`;
    if (requests.has(key)) return requests.get(key);
    const r = await fn();
    requests.set(key, r);
    return r;
  };

  async function handle(subject: string, body: unknown): Promise<unknown> {
    const p = parseApiSubject(subject);
    if (p.kind === 'unknown') throw new InvalidArgumentError([{ field: '(subject)', message: p.reason }]);
    if (p.kind === 'admin') {
      switch (p.op) {
        case 'tenants.create': {
          const req = validateRequest(p.op, body);
          if (tenants.has(req.id)) throw new AlreadyExistsError(`tenant "${req.id}" already exists`);
          const at = now();
          const t: Tenant = {
            id: req.id,
            ...(req.displayName ? { displayName: req.displayName } : {}),
            quota: req.quota ?? {},
            usage: { vcpus: 0, memoryMiB: 0, vfs: 0, vnfs: 0 },
            createdAt: at,
            updatedAt: at,
          };
          tenants.set(t.id, t);
          return t;
        }
        case 'tenants.get': {
          const req = validateRequest(p.op, body);
          return { ...tenantOf(req.id), usage: usage(req.id) };
        }
        case 'tenants.list':
          validateRequest(p.op, body);
          return { items: [...tenants.values()].map((t) => ({ ...t, usage: usage(t.id) })) };
        case 'tenants.delete': {
          const req = validateRequest(p.op, body);
          tenantOf(req.id);
          if ([...vnfs.values()].some((v) => v.tenantId === req.id && v.instantiationState === 'INSTANTIATED')) {
            throw new ConflictError(`tenant "${req.id}" still has VNFs: terminate them first`);
          }
          tenants.delete(req.id);
          return {};
        }
        case 'nodes.list':
          validateRequest(p.op, body);
          return { items: [...nodes.values()] };
        case 'nodes.get':
        case 'nodes.cordon':
        case 'nodes.uncordon': {
          const req = validateRequest(p.op, body);
          const n = nodes.get(req.id);
          if (!n) throw new NotFoundError(`node "${req.id}" not found`);
          if (p.op === 'nodes.cordon') n.cordoned = true;
          if (p.op === 'nodes.uncordon') n.cordoned = false;
          return n;
        }
        case 'nodes.drain': {
          const req = validateRequest(p.op, body);
          const n = nodes.get(req.id);
          if (!n) throw new NotFoundError(`node "${req.id}" not found`);
          n.cordoned = true;
          const ids: string[] = [];
          for (const v of vnfs.values()) {
            if (!v.replicas.some((r) => r.nodeId === n.id && r.state === 'RUNNING')) continue;
            const o = newOpOcc(v.tenantId, v.id, 'HEAL', undefined, { reason: `drain ${n.id}` });
            await finish(o);
            ids.push(o.id);
          }
          return { opOccIds: ids };
        }
        case 'tenants.credentials':
          validateRequest(p.op, body);
          throw new UnavailableError('the fake API issues no NATS credentials');
      }
    }
    const t = p.tenantId;
    switch (p.op) {
      case 'vnfs.instantiate': {
        const req = validateRequest(p.op, body);
        tenantOf(t);
        return idempotent(t, req.requestId, async () => {
          if ([...vnfs.values()].some((v) => v.tenantId === t && v.name === req.descriptor.name && v.instantiationState === 'INSTANTIATED')) {
            throw new AlreadyExistsError(`a VNF named "${req.descriptor.name}" already exists in tenant "${t}"`);
          }
          const at = now();
          const v: Vnf = {
            id: nextId('vnf'),
            tenantId: t,
            name: req.descriptor.name,
            descriptor: req.descriptor,
            instantiationState: 'INSTANTIATED',
            desiredReplicas: req.descriptor.replicas,
            replicas: [],
            createdAt: at,
            updatedAt: at,
          };
          vnfs.set(`${t}.${v.id}`, v);
          const o = newOpOcc(t, v.id, 'INSTANTIATE', req.requestId);
          v.lastOpOccId = o.id;
          await publish(t, v.id, { type: 'OpOcc', opOccId: o.id, vnfId: v.id, operation: 'INSTANTIATE', operationState: 'STARTING', at: o.startTime });
          const err = await place(v, 0, req.descriptor.replicas);
          if (err) v.instantiationState = 'NOT_INSTANTIATED';
          await finish(o, err);
          return { vnfId: v.id, opOccId: o.id };
        });
      }
      case 'vnfs.get': {
        const req = validateRequest(p.op, body);
        tenantOf(t);
        return vnfOf(t, req.id);
      }
      case 'vnfs.list':
        validateRequest(p.op, body);
        tenantOf(t);
        return { items: [...vnfs.values()].filter((v) => v.tenantId === t) };
      case 'vnfs.scale': {
        const req = validateRequest(p.op, body);
        tenantOf(t);
        return idempotent(t, req.requestId, async () => {
          const v = vnfOf(t, req.id);
          const o = newOpOcc(t, v.id, 'SCALE', req.requestId, { replicas: req.replicas });
          v.lastOpOccId = o.id;
          let err: ErrorBody | undefined;
          if (req.replicas > v.replicas.length) err = await place(v, v.replicas.length, req.replicas);
          else v.replicas = v.replicas.slice(0, req.replicas);
          v.desiredReplicas = req.replicas;
          await finish(o, err);
          return { opOccId: o.id };
        });
      }
      case 'vnfs.heal':
      case 'vnfs.terminate': {
        const req: { id: string; replica?: number; mode?: string; requestId?: string } = validateRequest(p.op, body);
        tenantOf(t);
        return idempotent(t, req.requestId, async () => {
          const v = vnfOf(t, req.id);
          const terminate = p.op === 'vnfs.terminate';
          const o = newOpOcc(t, v.id, terminate ? 'TERMINATE' : 'HEAL', req.requestId, {
            ...(req.replica !== undefined ? { replica: req.replica } : {}),
            ...(req.mode !== undefined ? { mode: req.mode } : {}),
          });
          v.lastOpOccId = o.id;
          if (terminate) {
            v.instantiationState = 'NOT_INSTANTIATED';
            for (const r of v.replicas) r.state = 'STOPPED';
          }
          await finish(o);
          return { opOccId: o.id };
        });
      }
      case 'opoccs.get': {
        const req = validateRequest(p.op, body);
        tenantOf(t);
        const o = opoccs.get(`${t}.${req.id}`);
        if (!o) throw new NotFoundError(`operation occurrence "${req.id}" not found in tenant "${t}"`);
        return o;
      }
      case 'notifications.list':
        validateRequest(p.op, body);
        tenantOf(t);
        throw new UnavailableError('the fake API keeps no notifications to list');
      case 'opoccs.list': {
        const req = validateRequest(p.op, body);
        tenantOf(t);
        return { items: [...opoccs.values()].filter((o) => o.tenantId === t && (!req.vnfId || o.vnfId === req.vnfId)) };
      }
      case 'vnfs.logs': {
        const req = validateRequest(p.op, body);
        tenantOf(t);
        const v = vnfOf(t, req.id);
        const lines = [`${v.name} replica ${req.replica ?? 0}: started`, `${v.name} replica ${req.replica ?? 0}: serving`];
        return { lines: req.tailLines ? lines.slice(-req.tailLines) : lines };
      }
      case 'vnfs.operate': {
        const req = validateRequest(p.op, body);
        tenantOf(t);
        return idempotent(t, req.requestId, async () => {
          const v = vnfOf(t, req.id) as Vnf & { operationalState?: string };
          if ((v.operationalState ?? 'STARTED') === req.changeStateTo) throw new ConflictError(`VNF ${v.id} is already ${req.changeStateTo}`);
          const o = newOpOcc(t, v.id, 'OPERATE', req.requestId, { changeStateTo: req.changeStateTo });
          v.lastOpOccId = o.id;
          v.operationalState = req.changeStateTo;
          for (const r of v.replicas) r.state = req.changeStateTo === 'STOPPED' ? 'STOPPED' : 'RUNNING';
          await finish(o);
          return { opOccId: o.id };
        });
      }
      case 'vnfs.exec':
      case 'opoccs.retry':
      case 'opoccs.rollback':
      case 'opoccs.fail':
        // Not simulated here: a clear error rather than a success without a result, which no server gives.
        validateRequest(p.op, body);
        throw new UnavailableError(`the fake API does not implement ${p.op}`);
    }
  }

  const serve = async (sub: Subscription): Promise<void> => {
    for await (const m of sub) await reply(m);
  };
  const reply = async (m: Msg): Promise<void> => {
    if (!m.reply) return; // a publish (events): nothing to answer
    received.push(m.subject);
    let env: unknown;
    try {
      let body: unknown;
      try {
        body = m.data.length === 0 ? {} : JSON.parse(new TextDecoder().decode(m.data));
      } catch {
        throw new InvalidArgumentError([{ field: '(request)', message: 'not JSON' }]);
      }
      env = { ok: true, result: await handle(m.subject, body) };
    } catch (err) {
      env = { ok: false, error: asAppError(err).toBody() };
    }
    m.respond(jc.encode(env));
  };
  const subs = [nc.subscribe(subjects.adminWildcard), nc.subscribe(subjects.tenantWildcard)];
  const done = Promise.all(subs.map((s) => serve(s)));
  await nc.flush();

  return {
    nodes,
    tenants,
    vnfs,
    opoccs,
    received,
    async stop() {
      for (const s of subs) s.unsubscribe();
      await done;
    },
  };
}
