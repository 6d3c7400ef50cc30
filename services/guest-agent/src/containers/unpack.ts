/**
 * Unpacks tar archives (image layers, tar or tar+gzip, and the node's packed layouts) into a root folder, safely:
 * - every name is taken relative to the root; a `..` component or a name that leaves the root refuses the archive;
 * - no path is ever resolved by the OS through a symlink: parent folders are walked one by one with lstat, and a
 *   symlink met on the way is resolved here, inside the root (an absolute target starts again at the root, `..`
 *   stops at the root), so an earlier entry cannot redirect a later one out of the root;
 * - symlinks are created as they are (their targets resolve inside the container's root at run time), hard links
 *   only to files already inside the root;
 * - OCI whiteouts: `.wh.<name>` deletes `<name>` from the layers below, `.wh..wh..opq` empties its folder of them;
 * - device nodes and FIFOs are skipped (containers get their own /dev); setuid/setgid bits are dropped.
 * Formats: ustar, GNU long names/links, pax path/linkpath/size records.
 */
import { createReadStream } from 'node:fs';
import { chmod, lchown, link, lstat, mkdir, open, readdir, readlink, rm, symlink, utimes } from 'node:fs/promises';
import { join } from 'node:path';
import { createGunzip } from 'node:zlib';
import { InvalidArgumentError } from '@edgenfv/contracts/internal/errors';

/** Reads exactly n bytes at a time from an async byte stream. */
class ByteReader {
  private buf: Buffer = Buffer.alloc(0);
  private done = false;
  constructor(private readonly it: AsyncIterator<Buffer>) {}
  async read(n: number): Promise<Buffer | null> {
    while (this.buf.length < n && !this.done) {
      const r = await this.it.next();
      if (r.done) this.done = true;
      else this.buf = this.buf.length ? Buffer.concat([this.buf, r.value]) : r.value;
    }
    if (this.buf.length < n) return null;
    const out = this.buf.subarray(0, n);
    this.buf = this.buf.subarray(n);
    return out;
  }
}

function field(h: Buffer, off: number, len: number): string {
  const s = h.subarray(off, off + len);
  const z = s.indexOf(0);
  return s.subarray(0, z < 0 ? len : z).toString('utf8');
}

function octal(h: Buffer, off: number, len: number): number {
  if (h[off]! & 0x80) {
    // base-256 (GNU) for big values
    let n = 0;
    for (let i = off + 1; i < off + len; i++) n = n * 256 + h[i]!;
    return n;
  }
  const s = field(h, off, len).trim();
  return s ? parseInt(s, 8) : 0;
}

function parsePax(data: Buffer): Record<string, string> {
  const out: Record<string, string> = {};
  let pos = 0;
  while (pos < data.length) {
    const sp = data.indexOf(0x20, pos);
    if (sp < 0) break;
    const len = Number(data.subarray(pos, sp).toString());
    if (!Number.isInteger(len) || len <= 0) break;
    const rec = data.subarray(sp + 1, pos + len - 1).toString('utf8');
    const eq = rec.indexOf('=');
    if (eq > 0) out[rec.slice(0, eq)] = rec.slice(eq + 1);
    pos += len;
  }
  return out;
}

export class UnsafeArchiveError extends InvalidArgumentError {
  constructor(what: string, name: string, message: string) {
    super([{ field: 'image', message: `${what}: entry ${JSON.stringify(name.slice(0, 200))} ${message}` }]);
  }
}

/** `a/./b/` -> ['a','b']; null when it climbs out (`..`). */
export function safeParts(name: string): string[] | null {
  const parts = name.split('/').filter((p) => p !== '' && p !== '.');
  return parts.includes('..') ? null : parts;
}

export interface UnpackOptions {
  /** Apply OCI whiteouts (image layers); false for plain archives. */
  whiteouts: boolean;
  /** For error messages: which layer or archive. */
  what: string;
}

export async function unpackTarFile(file: string, root: string, opts: UnpackOptions): Promise<void> {
  const head = Buffer.alloc(2);
  const fh = await open(file, 'r');
  try {
    await fh.read(head, 0, 2, 0);
  } finally {
    await fh.close();
  }
  const raw = createReadStream(file);
  const stream = head[0] === 0x1f && head[1] === 0x8b ? raw.pipe(createGunzip()) : raw;
  try {
    await unpackTar(stream[Symbol.asyncIterator]() as AsyncIterator<Buffer>, root, opts);
  } finally {
    raw.destroy();
  }
}

export async function unpackTar(it: AsyncIterator<Buffer>, root: string, opts: UnpackOptions): Promise<void> {
  await mkdir(root, { recursive: true });
  const r = new ByteReader(it);
  const createdHere = new Set<string>();
  let longName: string | undefined;
  let longLink: string | undefined;
  let pax: Record<string, string> = {};
  for (;;) {
    const h = await r.read(512);
    if (!h || h.every((b) => b === 0)) return;
    const type = String.fromCharCode(h[156]!) || '0';
    const magic = field(h, 257, 6);
    const prefix = magic.startsWith('ustar') ? field(h, 345, 155) : '';
    let name = longName ?? pax.path ?? (prefix ? `${prefix}/${field(h, 0, 100)}` : field(h, 0, 100));
    const linkName = longLink ?? pax.linkpath ?? field(h, 157, 100);
    const size = pax.size !== undefined ? Number(pax.size) : octal(h, 124, 12);
    const mode = octal(h, 100, 8) & 0o1777; // no setuid/setgid
    const uid = octal(h, 108, 8);
    const gid = octal(h, 116, 8);
    const mtime = octal(h, 136, 12);
    if (!Number.isSafeInteger(size) || size < 0) throw new UnsafeArchiveError(opts.what, name, 'has a bad size');
    const padded = Math.ceil(size / 512) * 512;
    // meta entries describe the next one
    if (type === 'L' || type === 'K' || type === 'x' || type === 'g') {
      const data = (await r.read(padded))?.subarray(0, size);
      if (!data) throw new UnsafeArchiveError(opts.what, name, 'is cut short');
      if (type === 'L') longName = field(data, 0, data.length);
      else if (type === 'K') longLink = field(data, 0, data.length);
      else if (type === 'x') pax = parsePax(data);
      continue;
    }
    longName = longLink = undefined;
    pax = {};
    const parts = safeParts(name);
    if (parts === null) throw new UnsafeArchiveError(opts.what, name, 'climbs out of the root (..)');
    name = parts.join('/');
    const skip = async (): Promise<void> => {
      let left = padded;
      while (left > 0) {
        const n = Math.min(left, 1 << 20);
        if (!(await r.read(n))) throw new UnsafeArchiveError(opts.what, name, 'is cut short');
        left -= n;
      }
    };
    if (parts.length === 0) {
      await skip(); // the root itself
      continue;
    }
    const base = parts[parts.length - 1]!;
    const parent = await resolveDirs(root, parts.slice(0, -1), opts.what, name);
    const target = join(parent, base);
    if (opts.whiteouts && base.startsWith('.wh.')) {
      await skip();
      if (base === '.wh..wh..opq') {
        for (const child of await readdir(parent)) {
          if (!createdHere.has(join(parent, child))) await rm(join(parent, child), { recursive: true, force: true });
        }
      } else {
        const victim = base.slice('.wh.'.length);
        if (victim && victim !== '.' && victim !== '..' && !victim.includes('/')) await rm(join(parent, victim), { recursive: true, force: true });
      }
      continue;
    }
    createdHere.add(target);
    const existing = await lstat(target).catch(() => null);
    if (type === '5') {
      await skip();
      if (existing && !existing.isDirectory()) await rm(target, { recursive: true, force: true });
      if (!existing || !existing.isDirectory()) await mkdir(target);
      await chmod(target, mode || 0o755);
      await lchown(target, uid, gid).catch(() => undefined);
      continue;
    }
    if (existing) await rm(target, { recursive: true, force: true });
    if (type === '0' || type === '\0' || type === '7') {
      const fh = await open(target, 'wx', 0o600);
      try {
        let left = size;
        let pad = padded - size;
        while (left > 0) {
          const n = Math.min(left, 1 << 20);
          const chunk = await r.read(n);
          if (!chunk) throw new UnsafeArchiveError(opts.what, name, 'is cut short');
          await fh.write(chunk);
          left -= n;
        }
        if (pad > 0 && !(await r.read(pad))) throw new UnsafeArchiveError(opts.what, name, 'is cut short');
        pad = 0;
      } finally {
        await fh.close();
      }
      await chmod(target, mode);
      await lchown(target, uid, gid).catch(() => undefined);
      await utimes(target, mtime, mtime).catch(() => undefined);
    } else if (type === '2') {
      await skip();
      await symlink(linkName, target);
      await lchown(target, uid, gid).catch(() => undefined);
    } else if (type === '1') {
      await skip();
      const to = safeParts(linkName);
      if (to === null || to.length === 0) throw new UnsafeArchiveError(opts.what, name, `hard-links out of the root (${linkName})`);
      const src = join(await resolveDirs(root, to.slice(0, -1), opts.what, name), to[to.length - 1]!);
      const st = await lstat(src).catch(() => null);
      if (!st || st.isDirectory()) throw new UnsafeArchiveError(opts.what, name, `hard-links to ${linkName}, which is not a file in the root`);
      await link(src, target);
    } else {
      await skip(); // devices, FIFOs, unknown types
    }
  }
}

/**
 * The host path of folder `parts` inside `root`, made where missing; symlinks on the way are resolved inside the
 * root (never by the OS), so the result is always under `root`.
 */
async function resolveDirs(root: string, parts: string[], what: string, name: string): Promise<string> {
  let resolved: string[] = [];
  const queue = [...parts];
  let links = 0;
  while (queue.length) {
    const p = queue.shift()!;
    if (p === '' || p === '.') continue;
    if (p === '..') {
      resolved.pop(); // at the root, .. is the root
      continue;
    }
    const cur = join(root, ...resolved, p);
    const st = await lstat(cur).catch(() => null);
    if (!st) {
      await mkdir(cur, { mode: 0o755 });
      resolved.push(p);
    } else if (st.isSymbolicLink()) {
      if (++links > 40) throw new UnsafeArchiveError(what, name, 'goes through too many symlinks');
      const t = await readlink(cur);
      if (t.startsWith('/')) resolved = [];
      queue.unshift(...t.split('/'));
    } else if (st.isDirectory()) resolved.push(p);
    else throw new UnsafeArchiveError(what, name, `has a parent ${p} that is not a folder`);
  }
  return join(root, ...resolved);
}
