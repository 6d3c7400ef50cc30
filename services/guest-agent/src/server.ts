/**
 * The guest agent's gRPC server (agent.proto's AgentService) on a local unix socket; the virtio-serial
 * multiplexer (channel.ts) connects the host's streams to it. Handlers are thin: each parses its request with the
 * module that owns it and translates errors to gRPC status codes in one place (toServiceError).
 */
import * as grpc from '@grpc/grpc-js';
import protobuf from 'protobufjs';
import { release } from 'node:os';
import { randomUUID } from 'node:crypto';
import { existsSync } from 'node:fs';
import { asAppError, ConflictError, InvalidArgumentError } from '@edgenfv/contracts/internal/errors';
import {
  AGENT_PROTO_LOADER_OPTIONS,
  AGENT_SERVICE,
  AGENT_PROTOCOL_MAJOR,
  AGENT_PROTOCOL_MINOR,
  errorCodeToGrpcStatus,
  isCompatibleProtocol,
  type AddArpNeighborsRequest,
  type ContainerRef,
  type CreateContainerRequest,
  type DeleteContainerRequest,
  type ExecProcessRequest,
  type PrepareDataplaneRequest,
  type ReidentifyRequest,
  type SetSysctlsRequest,
  type ShutdownRequest,
  type SignalContainerRequest,
  type UpdateInterfacesRequest,
  type UpdateRoutesRequest,
  type VersionRequest,
} from '@edgenfv/contracts/internal/agent';
import type { Log } from './log.js';
import { updateInterfaces, type NetDeps } from './net/interfaces.js';
import { addArpNeighbors, updateRoutes } from './net/routes.js';
import type { ProcSysctl } from './sysctl.js';
import type { ContainerRuntime } from './containers/runtime.js';
import { guestDetails, guestMetrics } from './guest-info.js';
import { prepareDataplane, type DataplaneDeps } from './dataplane.js';
import { Identity } from './identity.js';
import { runCommand } from './exec.js';

export const AGENT_VERSION = '0.1.0';

export interface AgentDeps {
  net: NetDeps;
  sysctl: ProcSysctl;
  containers: ContainerRuntime;
  dataplane: DataplaneDeps;
  procRoot?: string;
  /** Called after Shutdown's reply is sent (the app stops the channel and exits or powers off). */
  onShutdown?: (powerOff: boolean) => void;
  /** The agent's instance id and its renewal after a snapshot restore (default: a random id, the image's helper). */
  identity?: Identity;
  log: Log;
}

/**
 * AgentService's definition for grpc-js, straight from protobufjs: what @grpc/proto-loader's loadSync gives a
 * server (paths, streaming flags, serializers with AGENT_PROTO_LOADER_OPTIONS' conversions, the same calls), without
 * the reflection descriptors it also builds for every message (encoding FileDescriptorProtos: most of the agent's
 * start in an emulated guest; docs/guest-image.md). The host's client keeps proto-loader; both meet on the wire.
 */
export function loadAgentService(protoPath: string): grpc.ServiceDefinition {
  const { keepCase, ...conversion } = AGENT_PROTO_LOADER_OPTIONS;
  const root = new protobuf.Root().loadSync(protoPath, { keepCase });
  root.resolveAll();
  const service = root.lookupService(AGENT_SERVICE);
  const serializer = (type: protobuf.Type) => (arg: unknown): Buffer => {
    if (Array.isArray(arg)) throw new Error(`Failed to serialize message: expected object with ${type.name} structure, got array instead`);
    return type.encode(type.fromObject(arg as Record<string, unknown>)).finish() as Buffer;
  };
  const deserializer = (type: protobuf.Type) => (buf: Buffer): unknown => type.toObject(type.decode(buf), conversion);
  const def: Record<string, grpc.MethodDefinition<unknown, unknown>> = {};
  for (const m of service.methodsArray) {
    const req = m.resolvedRequestType!;
    const res = m.resolvedResponseType!;
    def[m.name] = {
      path: `/${AGENT_SERVICE}/${m.name}`,
      requestStream: !!m.requestStream,
      responseStream: !!m.responseStream,
      requestSerialize: serializer(req),
      requestDeserialize: deserializer(req),
      responseSerialize: serializer(res),
      responseDeserialize: deserializer(res),
      originalName: m.name.charAt(0).toLowerCase() + m.name.slice(1),
    };
  }
  return def;
}

export function toServiceError(err: unknown): Partial<grpc.StatusObject> {
  const app = asAppError(err);
  const metadata = new grpc.Metadata();
  metadata.set('edgenfv-error', JSON.stringify(app.toBody()));
  return { code: errorCodeToGrpcStatus(app.code), details: app.message, metadata };
}

// A handler takes its RPC's request type (from contracts/agent, which mirrors the .proto); `never` here makes
// a handler that does not name its request type fail to compile when it reads a field.
type Unary = (req: never) => Promise<unknown>;

export function agentHandlers(deps: AgentDeps): grpc.UntypedServiceImplementation {
  const identity = deps.identity ?? new Identity(randomUUID(), { run: runCommand, exists: existsSync });
  const log = deps.log;
  const unary = (name: string, fn: Unary): grpc.handleUnaryCall<unknown, unknown> => (call, cb) => {
    const t0 = performance.now();
    fn(call.request as never).then(
      (res) => {
        log.debug({ rpc: name, ms: Math.round(performance.now() - t0) }, 'rpc done');
        cb(null, res);
      },
      (err: unknown) => {
        const app = asAppError(err);
        if (app.code === 'INTERNAL') log.error({ err, rpc: name }, 'rpc failed');
        else log.info({ rpc: name, code: app.code, message: app.message }, 'rpc refused');
        cb(toServiceError(app));
      },
    );
  };
  const handlers: Record<string, Unary> = {
    Health: async () => ({
      status: 'SERVING',
      agentVersion: AGENT_VERSION,
      protocolMajor: AGENT_PROTOCOL_MAJOR,
      protocolMinor: AGENT_PROTOCOL_MINOR,
      uptimeSeconds: identity.uptimeSeconds,
      instanceId: identity.instanceId,
    }),
    Version: async (req: VersionRequest) => {
      if (!isCompatibleProtocol(req.protocolMajor, req.protocolMinor)) {
        throw new ConflictError(
          `host protocol ${req.protocolMajor}.${req.protocolMinor} is incompatible with agent protocol ${AGENT_PROTOCOL_MAJOR}.${AGENT_PROTOCOL_MINOR}`,
        );
      }
      return {
        agentVersion: AGENT_VERSION,
        protocolMajor: AGENT_PROTOCOL_MAJOR,
        protocolMinor: AGENT_PROTOCOL_MINOR,
        kernelRelease: release(),
        features: ['interfaces', 'routes', 'containers', 'dataplane', 'metrics'],
      };
    },
    GetGuestDetails: () => guestDetails(deps.net, AGENT_VERSION),
    UpdateInterfaces: async (req: UpdateInterfacesRequest) => ({ interfaces: await updateInterfaces(deps.net, req) }),
    UpdateRoutes: async (req: UpdateRoutesRequest) => ({ routes: await updateRoutes(deps.net.ip, req?.routes) }),
    AddArpNeighbors: async (req: AddArpNeighborsRequest) => {
      await addArpNeighbors(deps.net.ip, req?.neighbors);
      return {};
    },
    SetSysctls: async (req: SetSysctlsRequest) => {
      await deps.sysctl.set(req?.sysctls);
      return {};
    },
    CreateContainer: (req: CreateContainerRequest) => deps.containers.create(req),
    StartContainer: (req: ContainerRef) => deps.containers.start(req?.id),
    SignalContainer: async (req: SignalContainerRequest) => {
      await deps.containers.signal(req?.id, req?.signal);
      return {};
    },
    WaitContainer: (req: ContainerRef) => deps.containers.wait(req?.id),
    DeleteContainer: async (req: DeleteContainerRequest) => {
      await deps.containers.delete(req?.id, req?.force);
      return {};
    },
    ListContainers: async () => ({ containers: deps.containers.list() }),
    ExecProcess: (req: ExecProcessRequest) => deps.containers.exec(req?.id, req?.argv, req?.timeoutMs),
    GetMetrics: () => guestMetrics(deps.net, deps.containers.list().filter((c) => c.state === 'RUNNING').length, deps.procRoot),
    PrepareDataplane: (req: PrepareDataplaneRequest) => prepareDataplane(deps.dataplane, req),
    Reidentify: async (req: ReidentifyRequest) => {
      const res = await identity.reidentify(req);
      log.info({ instanceId: res.instanceId, previousInstanceId: res.previousInstanceId }, 'reidentified after a snapshot restore (RNG reseeded, clock set)');
      return res;
    },
    Shutdown: async (req: ShutdownRequest) => {
      const grace = req?.graceMs ?? 5000;
      if (!Number.isInteger(grace) || grace < 0 || grace > 600_000) throw new InvalidArgumentError([{ field: 'graceMs', message: 'must be 0..600000' }]);
      if (!deps.onShutdown) throw new ConflictError('this agent cannot shut down (no shutdown hook)');
      await deps.containers.stopAll(grace);
      const powerOff = req?.powerOff ?? false;
      setTimeout(() => deps.onShutdown!(powerOff), 100);
      return {};
    },
  };
  const impl: grpc.UntypedServiceImplementation = {};
  for (const [name, fn] of Object.entries(handlers)) impl[name] = unary(name, fn);
  impl.ReadLogs = (async (call: grpc.ServerWritableStream<{ id: string; follow: boolean; tailLines: number }, unknown>) => {
    const ac = new AbortController();
    call.on('cancelled', () => ac.abort());
    try {
      for await (const chunk of deps.containers.logs(call.request.id, { follow: call.request.follow, tailLines: call.request.tailLines, signal: ac.signal })) {
        if (ac.signal.aborted) return;
        if (!call.write(chunk)) await new Promise((r) => call.once('drain', r));
      }
      call.end();
    } catch (err) {
      call.destroy(Object.assign(new Error(asAppError(err).message), toServiceError(err)));
    }
  }) as grpc.handleServerStreamingCall<unknown, unknown>;
  return impl;
}

export interface RunningServer {
  server: grpc.Server;
  close(): Promise<void>;
}

/** Binds the agent's gRPC server to `unix://socketPath`. */
export async function startAgentServer(opts: { socketPath: string; protoPath: string; deps: AgentDeps }): Promise<RunningServer> {
  const server = new grpc.Server({ 'grpc.max_receive_message_length': 16 * 1024 * 1024 });
  server.addService(loadAgentService(opts.protoPath), agentHandlers(opts.deps));
  await new Promise<number>((resolve, reject) =>
    server.bindAsync(`unix://${opts.socketPath}`, grpc.ServerCredentials.createInsecure(), (err, port) => (err ? reject(err) : resolve(port))),
  );
  return {
    server,
    close: () =>
      new Promise<void>((resolve) => {
        const t = setTimeout(() => {
          server.forceShutdown();
          resolve();
        }, 2000);
        server.tryShutdown(() => {
          clearTimeout(t);
          resolve();
        });
      }),
  };
}
