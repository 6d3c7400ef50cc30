/**
 * A tiny JSON-lines logger (a subset of pino's interface): the guest agent bundle stays small, so pino is not in
 * it. Tests pass `silentLog`.
 */
export interface Log {
  debug(obj: object | string, msg?: string): void;
  info(obj: object | string, msg?: string): void;
  warn(obj: object | string, msg?: string): void;
  error(obj: object | string, msg?: string): void;
  child(bindings: Record<string, string>): Log;
}

const LEVELS = { debug: 20, info: 30, warn: 40, error: 50 } as const;
type Level = keyof typeof LEVELS;

export function createLog(opts: { level?: Level; bindings?: Record<string, string>; write?: (line: string) => void } = {}): Log {
  const min = LEVELS[opts.level ?? 'info'];
  const bindings = opts.bindings ?? {};
  const write = opts.write ?? ((line: string) => process.stdout.write(line + '\n'));
  const emit = (level: Level, obj: object | string, msg?: string): void => {
    if (LEVELS[level] < min) return;
    const fields = typeof obj === 'string' ? { msg: obj } : { ...serialize(obj), ...(msg ? { msg } : {}) };
    write(JSON.stringify({ level: LEVELS[level], time: new Date().toISOString(), ...bindings, ...fields }));
  };
  return {
    debug: (o, m) => emit('debug', o, m),
    info: (o, m) => emit('info', o, m),
    warn: (o, m) => emit('warn', o, m),
    error: (o, m) => emit('error', o, m),
    child: (b) => createLog({ ...opts, bindings: { ...bindings, ...b } }),
  };
}

function serialize(obj: object): object {
  const o = obj as Record<string, unknown>;
  if (o.err instanceof Error) return { ...o, err: { type: o.err.name, message: o.err.message, stack: o.err.stack } };
  return o;
}

export const silentLog: Log = createLog({ write: () => {} });
