/**
 * Typed gRPC client of the guest agent (agent.proto, loaded from the contracts package at run time). Errors come
 * back as AppError subclasses: the agent puts its error body in the `edgenfv-error` trailer; transport failures
 * become UnavailableError.
 */
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import {
  AGENT_PROTO_LOADER_OPTIONS,
  AGENT_PROTOCOL_MAJOR,
  AGENT_PROTOCOL_MINOR,
  AppError,
  AlreadyExistsError,
  ConflictError,
  InvalidArgumentError,
  NotFoundError,
  PermissionDeniedError,
  UnavailableError,
  type ErrorCode,
  agentProtoPath,
  grpcStatusToErrorCode,
  isCompatibleProtocol,
  type AddArpNeighborsRequest,
  type ContainerStatus,
  type CreateContainerRequest,
  type ErrorBody,
  type ExecProcessResponse,
  type GuestDetails,
  type GuestMetrics,
  type HealthResponse,
  type ReidentifyRequest,
  type ReidentifyResponse,
  type ListContainersResponse,
  type LogChunk,
  type PrepareDataplaneRequest,
  type PrepareDataplaneResponse,
  type ReadLogsRequest,
  type UpdateInterfacesRequest,
  type UpdateInterfacesResponse,
  type UpdateRoutesRequest,
  type UpdateRoutesResponse,
  type VersionResponse,
} from '@edgenfv/contracts';

export const HOST_VERSION = '0.1.0';

let cachedCtor: grpc.ServiceClientConstructor | undefined;
function serviceCtor(protoPath = agentProtoPath()): grpc.ServiceClientConstructor {
  if (cachedCtor) return cachedCtor;
  const def = protoLoader.loadSync(protoPath, { ...AGENT_PROTO_LOADER_OPTIONS });
  const pkg = grpc.loadPackageDefinition(def) as unknown as { edgenfv: { agent: { v1: { AgentService: grpc.ServiceClientConstructor } } } };
  cachedCtor = pkg.edgenfv.agent.v1.AgentService;
  return cachedCtor;
}

/** gRPC's "the connection went away after the request was sent" (status UNAVAILABLE, "Connection dropped"). */
function droppedAfterSend(err: unknown): boolean {
  for (let e: unknown = err; e instanceof Error; e = e.cause) {
    const se = e as Partial<grpc.ServiceError>;
    if (se.code === grpc.status.UNAVAILABLE && /Connection dropped/.test(se.details ?? e.message)) return true;
  }
  return false;
}

/** A gRPC error from the agent as an AppError (the agent's own error body when it sent one). */
export function fromServiceError(err: grpc.ServiceError): AppError {
  const raw = err.metadata?.get('edgenfv-error')?.[0];
  if (raw) {
    try {
      const body = JSON.parse(String(raw)) as ErrorBody;
      const issues = (body.details as { issues?: Array<{ field: string; message: string }> } | undefined)?.issues;
      if (body.code === 'INVALID_ARGUMENT' && issues) return new InvalidArgumentError(issues, { cause: err });
      return appErrorOf(body.code, body.message, body.details, err);
    } catch {
      /* fall through */
    }
  }
  return appErrorOf(grpcStatusToErrorCode(err.code), `guest agent: ${err.details || err.message}`, undefined, err);
}

/** The AppError subclass for a code, so that callers can use instanceof. */
function appErrorOf(code: ErrorCode, message: string, details: unknown, cause: unknown): AppError {
  let e: AppError;
  switch (code) {
    case 'NOT_FOUND':
      e = new NotFoundError(message, details);
      break;
    case 'ALREADY_EXISTS':
      e = new AlreadyExistsError(message, details);
      break;
    case 'CONFLICT':
      e = new ConflictError(message, details);
      break;
    case 'UNAVAILABLE':
      return new UnavailableError(message, { details, cause });
    case 'PERMISSION_DENIED':
      e = new PermissionDeniedError(message, details);
      break;
    case 'INVALID_ARGUMENT':
      e = new InvalidArgumentError(message);
      break;
    default:
      return new AppError(code, message, { details, cause });
  }
  Object.defineProperty(e, 'cause', { value: cause, enumerable: false });
  return e;
}

export interface CallOptions {
  timeoutMs?: number;
  signal?: AbortSignal;
}

type Raw = grpc.Client & Record<string, (...a: unknown[]) => unknown>;

export class AgentClient {
  private readonly raw: Raw;
  readonly target: string;
  /** The agent's instance id (Health) when waitReady saw it ready: a later other one means it was restarted. */
  readyInstanceId?: string;

  /** target: `unix:/path` (the host channel's listen socket). */
  /** Every call's deadline is multiplied by this (node config guest.rpcTimeoutScale: a nested TCG guest is slow). */
  private readonly timeoutScale: number;

  constructor(target: string, opts: { protoPath?: string; keepaliveTimeoutMs?: number; rpcTimeoutScale?: number } = {}) {
    this.target = target;
    this.timeoutScale = opts.rpcTimeoutScale ?? 1;
    const Ctor = serviceCtor(opts.protoPath);
    this.raw = new Ctor(target, grpc.credentials.createInsecure(), {
      'grpc.max_receive_message_length': 16 * 1024 * 1024,
      'grpc.initial_reconnect_backoff_ms': 100,
      'grpc.max_reconnect_backoff_ms': 1000,
      'grpc.keepalive_time_ms': 20_000,
      'grpc.keepalive_timeout_ms': opts.keepaliveTimeoutMs ?? 10_000,
    }) as Raw;
  }

  private unary<T>(method: string, req: unknown, opts: CallOptions = {}): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      const deadline = Date.now() + (opts.timeoutMs ?? 30_000) * this.timeoutScale;
      const call = this.raw[method]!(req, { deadline }, (err: grpc.ServiceError | null, res: T) => {
        opts.signal?.removeEventListener('abort', onAbort);
        if (err) reject(fromServiceError(err));
        else resolve(res);
      }) as grpc.ClientUnaryCall;
      const onAbort = () => call.cancel();
      opts.signal?.addEventListener('abort', onAbort, { once: true });
    });
  }

  /** After a snapshot restore: the guest's RNG reseeded with the host's entropy, its clock set, a new instance id. */
  reidentify(req: ReidentifyRequest, opts?: CallOptions): Promise<ReidentifyResponse> {
    return this.unary('Reidentify', req, opts);
  }
  health(opts?: CallOptions): Promise<HealthResponse> {
    return this.unary('Health', {}, opts);
  }
  /** The handshake: refuses an agent whose protocol major differs (and the agent refuses such a host). */
  async version(opts?: CallOptions): Promise<VersionResponse> {
    const v = await this.unary<VersionResponse>('Version', { hostVersion: HOST_VERSION, protocolMajor: AGENT_PROTOCOL_MAJOR, protocolMinor: AGENT_PROTOCOL_MINOR }, opts);
    if (!isCompatibleProtocol(v.protocolMajor, v.protocolMinor)) {
      throw new ConflictError(`guest agent protocol ${v.protocolMajor}.${v.protocolMinor} is incompatible with host protocol ${AGENT_PROTOCOL_MAJOR}.${AGENT_PROTOCOL_MINOR}`);
    }
    return v;
  }
  guestDetails(opts?: CallOptions): Promise<GuestDetails> {
    return this.unary('GetGuestDetails', {}, opts);
  }
  updateInterfaces(req: UpdateInterfacesRequest, opts?: CallOptions): Promise<UpdateInterfacesResponse> {
    return this.unary('UpdateInterfaces', req, opts);
  }
  updateRoutes(req: UpdateRoutesRequest, opts?: CallOptions): Promise<UpdateRoutesResponse> {
    return this.unary('UpdateRoutes', req, opts);
  }
  async addArpNeighbors(req: AddArpNeighborsRequest, opts?: CallOptions): Promise<void> {
    await this.unary('AddArpNeighbors', req, opts);
  }
  async setSysctls(sysctls: Record<string, string>, opts?: CallOptions): Promise<void> {
    await this.unary('SetSysctls', { sysctls }, opts);
  }
  createContainer(req: CreateContainerRequest, opts?: CallOptions): Promise<ContainerStatus> {
    return this.unary('CreateContainer', req, opts);
  }
  startContainer(id: string, opts?: CallOptions): Promise<ContainerStatus> {
    return this.unary('StartContainer', { id }, opts);
  }
  async signalContainer(id: string, signal: string, opts?: CallOptions): Promise<void> {
    await this.unary('SignalContainer', { id, signal }, opts);
  }
  /** Resolves when the container stops (no deadline unless timeoutMs is given). */
  waitContainer(id: string, opts: CallOptions = {}): Promise<ContainerStatus> {
    return this.unary('WaitContainer', { id }, { timeoutMs: opts.timeoutMs ?? 365 * 24 * 3600 * 1000, ...(opts.signal ? { signal: opts.signal } : {}) });
  }
  async deleteContainer(id: string, force = false, opts?: CallOptions): Promise<void> {
    await this.unary('DeleteContainer', { id, force }, opts);
  }
  listContainers(opts?: CallOptions): Promise<ListContainersResponse> {
    return this.unary('ListContainers', {}, opts);
  }
  execProcess(id: string, argv: string[], opts: CallOptions = {}): Promise<ExecProcessResponse> {
    return this.unary('ExecProcess', { id, argv, timeoutMs: opts.timeoutMs ?? 30_000 }, { timeoutMs: (opts.timeoutMs ?? 30_000) + 5000 });
  }
  getMetrics(opts?: CallOptions): Promise<GuestMetrics> {
    return this.unary('GetMetrics', {}, opts);
  }
  prepareDataplane(req: PrepareDataplaneRequest, opts?: CallOptions): Promise<PrepareDataplaneResponse> {
    return this.unary('PrepareDataplane', req, opts);
  }

  /**
   * Stops every container (SIGTERM, SIGKILL after graceMs), then powers the VM off (QEMU exits with -no-reboot) or,
   * with powerOff false, restarts the agent. Resolves once the agent accepted it.
   */
  async shutdown(opts: { graceMs?: number; powerOff?: boolean } = {}, call?: CallOptions): Promise<void> {
    try {
      await this.unary('Shutdown', { graceMs: opts.graceMs ?? 5000, powerOff: opts.powerOff ?? true }, { timeoutMs: (opts.graceMs ?? 5000) + 30_000, ...call });
    } catch (err) {
      // The agent answers and leaves 100 ms later; on a loaded host its answer can still be on the way when the
      // channel closes. A request that was delivered and whose connection then dropped is the agent leaving, as asked.
      if (droppedAfterSend(err)) return;
      throw err;
    }
  }

  /** Log chunks of a container; with follow, until it stops or the signal aborts. */
  async *readLogs(req: ReadLogsRequest, opts: { signal?: AbortSignal } = {}): AsyncGenerator<LogChunk> {
    const call = this.raw.ReadLogs!(req) as grpc.ClientReadableStream<LogChunk>;
    const onAbort = () => call.cancel();
    opts.signal?.addEventListener('abort', onAbort, { once: true });
    try {
      for await (const chunk of call) yield chunk as LogChunk;
    } catch (err) {
      if ((err as grpc.ServiceError).code === grpc.status.CANCELLED && opts.signal?.aborted) return;
      throw fromServiceError(err as grpc.ServiceError);
    } finally {
      opts.signal?.removeEventListener('abort', onAbort);
      call.cancel();
    }
  }

  /**
   * Polls Health until the agent answers SERVING, then runs the Version handshake. This is what "the VM has
   * started" means. Rejects with UnavailableError after timeoutMs, ConflictError for an incompatible agent.
   */
  async waitReady(opts: { timeoutMs: number; signal?: AbortSignal }): Promise<VersionResponse> {
    const deadline = Date.now() + opts.timeoutMs;
    let last: unknown;
    while (Date.now() < deadline) {
      if (opts.signal?.aborted) throw opts.signal.reason ?? new UnavailableError('aborted');
      // Health and Version at once on the one connection (a TCG guest's round trip is 100-200 ms): Version's answer
      // counts only when Health says SERVING
      const version = this.version({ timeoutMs: 10_000 });
      version.catch(() => undefined); // awaited below only after a SERVING health
      try {
        const h = await this.health({ timeoutMs: Math.max(100, Math.min(5000, deadline - Date.now())), ...(opts.signal ? { signal: opts.signal } : {}) });
        if (h.status === 'SERVING') {
          const v = await version;
          this.readyInstanceId = h.instanceId;
          return v;
        }
      } catch (err) {
        if (err instanceof ConflictError) throw err;
        last = err;
      }
      await new Promise((r) => setTimeout(r, 100));
    }
    throw new UnavailableError(`guest agent did not answer within ${opts.timeoutMs} ms`, { cause: last });
  }

  close(): void {
    this.raw.close();
  }
}
