/**
 * The node's image store: resolves a VNFD's image ref into what the guest agent runs. Registry images are pulled
 * (registry.ts) into a blob cache by digest, shared by every tenant on the node (a blob is fetched once, and a
 * cached blob is trusted only because its name is its verified digest); each pulled image becomes an OCI image
 * layout (hard links to the cached blobs) and is packed into the read-only disk the VM gets (oci-disk.ts). `oci:`
 * layouts on the node are packed the same way, from the folders the node config allows.
 *
 * cacheDir/
 *   blobs/sha256/<hex>          verified blobs (config, layers, manifests)
 *   layouts/<manifest hex>/     OCI layout of one image (index.json, oci-layout, blobs -> hard links, last-used)
 *   disks/<serial>.tar          packed layouts (the VM disks); disks/<manifest hex>.json -> {serial}
 *
 * Pruning: past `images.cacheMaxBytes` (blobs and packed disks), after each pull, the pulled images no replica on
 * the node uses (and not used in the last minute) are removed least recently used first, with the blobs no other
 * image shares, until the cache fits; blobs no image holds go first. Pulls and pruning never overlap.
 */
import { existsSync } from 'node:fs';
import { copyFile, link, mkdir, readFile, readdir, realpath, rename, rm, stat, writeFile } from 'node:fs/promises';
import { join, sep } from 'node:path';
import { randomBytes } from 'node:crypto';
import { IMAGE_REF_FORMS, InvalidArgumentError, NotFoundError, UnavailableError, parseImageRef } from '@edgenfv/contracts';
import type { NodeAgentConfig } from '../config.js';
import { packOciLayoutDisk, type OciDisk } from '../guest/oci-disk.js';
import { LAYER_TYPES, MEDIA, RegistryClient, sha256, type Descriptor, type ImageManifest, type RegistryTarget } from './registry.js';

export interface ResolvedImage {
  /** What the guest agent's CreateContainer gets: `builtin:<name>` or `oci-disk:<serial>[:tag]`. */
  guestRef: string;
  /** Manifest digest of the image (registry and OCI layout images). */
  digest?: string;
  /** The read-only disk the VM must have. */
  disk?: OciDisk;
}

export type ProgressFn = (message: string) => void;

export interface ImageStoreOptions {
  /** Manifest digests of the images the node's replicas use now: never pruned. */
  inUse?: () => Iterable<string>;
  /** Where pruning says what it removed (and a failed prune, which never fails a pull). */
  logger?: { info(obj: object, msg: string): void; warn(obj: object, msg: string): void };
  now?: () => number;
}

/** What one prune removed. */
export interface PruneReport {
  removedImages: string[];
  removedBlobs: number;
  bytesBefore: number;
  bytesAfter: number;
}

/** An image used this recently is kept even when nothing records its use yet (a replica being started). */
const RECENT_USE_MS = 60_000;

const MiB = 1024 * 1024;
const fmt = (n: number): string => `${(n / MiB).toFixed(1)} MiB`;

export class ImageStore {
  private readonly client: RegistryClient;
  private readonly inflight = new Map<string, Promise<void>>();
  /** Pulls under way, and the prune under way: they exclude each other (a prune never removes a blob being linked). */
  private pulls = 0;
  private pruning: Promise<PruneReport> | undefined;
  private readonly idle: (() => void)[] = [];

  constructor(
    private readonly cfg: Pick<NodeAgentConfig, 'registries' | 'images'>,
    client?: RegistryClient,
    private readonly opts: ImageStoreOptions = {},
  ) {
    this.client = client ?? new RegistryClient(cfg.registries);
  }

  private now(): number {
    return this.opts.now?.() ?? Date.now();
  }

  private get dir(): string {
    return this.cfg.images.cacheDir;
  }

  async resolve(ref: string, progress: ProgressFn = () => undefined): Promise<ResolvedImage> {
    const parsed = parseImageRef(ref);
    if (!parsed) throw new InvalidArgumentError([{ field: 'image.ref', message: `must be ${IMAGE_REF_FORMS}` }]);
    switch (parsed.kind) {
      case 'builtin':
        return { guestRef: ref };
      case 'oci':
        return this.fromLayout(ref, parsed.layoutDir, parsed.tag);
      case 'registry': {
        while (this.pruning) await this.pruning.catch(() => undefined);
        this.pulls++;
        let image: ResolvedImage;
        try {
          image = await this.pull({ host: parsed.host, repository: parsed.repository, ref }, parsed.tag, parsed.digest, progress);
        } finally {
          if (--this.pulls === 0) for (const wake of this.idle.splice(0)) wake();
        }
        await this.prune().catch((err: unknown) => this.opts.logger?.warn({ err }, 'image cache prune failed'));
        return image;
      }
    }
  }

  /**
   * Removes pulled images nothing uses, least recently used first, until the cache (blobs and packed disks) fits
   * `images.cacheMaxBytes`. Waits for pulls under way; one prune at a time.
   */
  prune(): Promise<PruneReport> {
    this.pruning ??= (async () => {
      while (this.pulls > 0) await new Promise<void>((r) => this.idle.push(r));
      return this.pruneNow();
    })().finally(() => (this.pruning = undefined));
    return this.pruning;
  }

  private async pruneNow(): Promise<PruneReport> {
    const blobsDir = join(this.dir, 'blobs', 'sha256');
    const layoutsDir = join(this.dir, 'layouts');
    const sizeOf = async (p: string): Promise<number> => (await stat(p).catch(() => null))?.size ?? 0;
    const blobs = new Map<string, number>();
    for (const name of await readdir(blobsDir).catch(() => [] as string[])) {
      if (/^[a-f0-9]{64}$/.test(name)) blobs.set(name, await sizeOf(join(blobsDir, name)));
    }
    const images: { hex: string; lastUsed: number; blobs: string[]; disk?: string; note: string; diskBytes: number }[] = [];
    for (const hex of await readdir(layoutsDir).catch(() => [] as string[])) {
      if (!/^[a-f0-9]{64}$/.test(hex)) continue;
      const dir = join(layoutsDir, hex);
      const used = Number(await readFile(join(dir, 'last-used'), 'utf8').catch(() => 'NaN'));
      const lastUsed = Number.isFinite(used) ? used : ((await stat(join(dir, 'index.json')).catch(() => null))?.mtimeMs ?? 0);
      const note = join(this.dir, 'disks', `${hex}.json`);
      const disk = (JSON.parse(await readFile(note, 'utf8').catch(() => 'null')) as OciDisk | null)?.path;
      images.push({ hex, lastUsed, blobs: await readdir(join(dir, 'blobs', 'sha256')).catch(() => []), ...(disk ? { disk } : {}), note, diskBytes: disk ? await sizeOf(disk) : 0 });
    }
    const total = (): number => [...blobs.values()].reduce((a, b) => a + b, 0) + images.reduce((a, i) => a + i.diskBytes, 0);
    const report: PruneReport = { removedImages: [], removedBlobs: 0, bytesBefore: total(), bytesAfter: 0 };
    const limit = this.cfg.images.cacheMaxBytes;
    const held = (): Set<string> => new Set(images.flatMap((i) => i.blobs));
    const dropUnheld = async (): Promise<void> => {
      const keep = held();
      for (const hex of [...blobs.keys()]) {
        if (keep.has(hex)) continue;
        await rm(join(blobsDir, hex), { force: true });
        blobs.delete(hex);
        report.removedBlobs++;
      }
    };
    if (total() > limit) {
      await dropUnheld(); // blobs of no image (a pull that failed half-way) go first
      const inUse = new Set([...(this.opts.inUse?.() ?? [])].map((d) => d.replace(/^sha256:/, '')));
      const now = this.now();
      const candidates = images.filter((i) => !inUse.has(i.hex) && now - i.lastUsed >= RECENT_USE_MS).sort((a, b) => a.lastUsed - b.lastUsed);
      for (const img of candidates) {
        if (total() <= limit) break;
        await rm(join(layoutsDir, img.hex), { recursive: true, force: true });
        if (img.disk) await rm(img.disk, { force: true });
        await rm(img.note, { force: true });
        images.splice(images.indexOf(img), 1);
        report.removedImages.push(`sha256:${img.hex}`);
        await dropUnheld();
      }
    }
    report.bytesAfter = total();
    if (report.removedImages.length || report.removedBlobs) this.opts.logger?.info({ ...report, limit }, 'image cache pruned');
    return report;
  }

  /** An OCI layout on the node (only under images.ociLayoutRoots: tenants must not name the node's other files). */
  private async fromLayout(ref: string, layoutDir: string, tag?: string): Promise<ResolvedImage> {
    const real = await realpath(layoutDir).catch(() => null);
    if (!real) throw new NotFoundError(`image ${ref}: no OCI layout at ${layoutDir} on this node`, { field: 'image.ref' });
    const roots = await Promise.all(this.cfg.images.ociLayoutRoots.map((r) => realpath(r).catch(() => null)));
    if (!roots.some((r) => r !== null && (real === r || real.startsWith(r + sep)))) {
      throw new InvalidArgumentError([
        { field: 'image.ref', message: `image ${ref}: OCI layouts are served only from the node's images.ociLayoutRoots (${this.cfg.images.ociLayoutRoots.join(', ') || 'none configured'})` },
      ]);
    }
    const index = JSON.parse(await readFile(join(real, 'index.json'), 'utf8').catch(() => '{}')) as { manifests?: { digest: string; annotations?: Record<string, string> }[] };
    const manifests = index.manifests ?? [];
    const m = manifests.find((x) => x.annotations?.['org.opencontainers.image.ref.name'] === (tag ?? 'latest')) ?? (tag === undefined && manifests.length === 1 ? manifests[0] : undefined);
    if (!m) throw new NotFoundError(`image ${ref}: no manifest tagged ${tag ?? 'latest'} in ${layoutDir}`, { field: 'image.ref' });
    const disk = await packOciLayoutDisk({ layoutDir: real, outDir: join(this.dir, 'disks') });
    return { guestRef: `oci-disk:${disk.serial}${tag ? `:${tag}` : ''}`, digest: m.digest, disk };
  }

  private async pull(t: RegistryTarget, tag: string | undefined, pinned: string | undefined, progress: ProgressFn): Promise<ResolvedImage> {
    progress(`pulling ${t.ref}: manifest`);
    // tag and digest: the tag is fetched and must be the pinned digest (a deploy pinned to what it tested)
    let top = await this.client.manifest(t, tag ?? pinned ?? 'latest', pinned);
    if (top.mediaType === MEDIA.ociIndex || top.mediaType === MEDIA.dockerList) {
      const list = JSON.parse(top.bytes.toString('utf8')) as { manifests?: Descriptor[] };
      const pick = (list.manifests ?? []).find((d) => d.platform?.os === 'linux' && d.platform.architecture === 'amd64');
      if (!pick) throw new UnavailableError(`image ${t.ref}: no linux/amd64 image in its manifest list`, { details: { image: t.ref } });
      top = await this.client.manifest(t, pick.digest, pick.digest);
    }
    if (top.mediaType !== MEDIA.ociManifest && top.mediaType !== MEDIA.dockerManifest) {
      throw new UnavailableError(`image ${t.ref}: unsupported manifest type ${JSON.stringify(top.mediaType)}`, { details: { image: t.ref } });
    }
    const manifest = JSON.parse(top.bytes.toString('utf8')) as ImageManifest;
    if (!manifest.config?.digest || !Array.isArray(manifest.layers)) throw new UnavailableError(`image ${t.ref}: malformed manifest ${top.digest}`, { details: { image: t.ref } });
    for (const l of manifest.layers) {
      if (!LAYER_TYPES.includes(l.mediaType)) throw new UnavailableError(`image ${t.ref}: layer ${l.digest} has unsupported media type ${l.mediaType}`, { details: { image: t.ref } });
      if (l.urls?.length) throw new UnavailableError(`image ${t.ref}: foreign layer ${l.digest} (urls) is not pulled`, { details: { image: t.ref } });
    }
    const blobs = [manifest.config, ...manifest.layers];
    const total = blobs.reduce((s, b) => s + (Number.isSafeInteger(b.size) && b.size >= 0 ? b.size : Infinity), 0);
    if (total > this.cfg.images.maxImageBytes) {
      throw new UnavailableError(`image ${t.ref}: ${total} bytes is over this node's limit of ${this.cfg.images.maxImageBytes} (images.maxImageBytes)`, { details: { image: t.ref } });
    }
    await mkdir(join(this.dir, 'blobs', 'sha256'), { recursive: true });
    await this.putBlob(top.digest, top.bytes);
    let done = 0;
    for (const [i, b] of blobs.entries()) {
      const what = i === 0 ? 'config' : `layer ${i}/${manifest.layers.length}`;
      await this.fetchBlob(t, b, (n) => progress(`pulling ${t.ref}: ${what} ${fmt(done + n)} of ${fmt(total)}`));
      done += b.size;
      progress(`pulling ${t.ref}: ${what} ${b.digest.slice(0, 19)} verified (${fmt(done)} of ${fmt(total)})`);
    }
    const layoutDir = await this.layout(top.digest, top.mediaType, top.bytes.length, blobs);
    const disk = await this.disk(top.digest, layoutDir);
    await writeFile(join(layoutDir, 'last-used'), String(this.now()));
    progress(`pulled ${t.ref}: ${top.digest}`);
    return { guestRef: `oci-disk:${disk.serial}`, digest: top.digest, disk };
  }

  private blobPath(digest: string): string {
    return join(this.dir, 'blobs', 'sha256', digest.slice('sha256:'.length));
  }

  private async putBlob(digest: string, bytes: Buffer): Promise<void> {
    if (sha256(bytes) !== digest) throw new UnavailableError(`blob ${digest} does not match its digest`);
    const path = this.blobPath(digest);
    if (existsSync(path)) return;
    const tmp = `${path}.${randomBytes(4).toString('hex')}.tmp`;
    await writeFile(tmp, bytes, { mode: 0o600 });
    await rename(tmp, path);
  }

  /** Fetches a blob into the cache once (concurrent pulls of the same digest share one download). */
  private async fetchBlob(t: RegistryTarget, d: Descriptor, onBytes: (n: number) => void): Promise<void> {
    const path = this.blobPath(d.digest);
    if (existsSync(path)) return;
    let p = this.inflight.get(d.digest);
    if (!p) {
      const tmp = `${path}.${randomBytes(4).toString('hex')}.tmp`;
      p = this.client
        .blob(t, d, tmp, onBytes)
        .then(() => rename(tmp, path))
        .finally(() => this.inflight.delete(d.digest));
      this.inflight.set(d.digest, p);
    }
    await p;
  }

  /** The OCI layout of one pulled image: index.json naming the manifest, blobs as hard links into the cache. */
  private async layout(manifestDigest: string, mediaType: string, size: number, blobs: Descriptor[]): Promise<string> {
    const dir = join(this.dir, 'layouts', manifestDigest.slice('sha256:'.length));
    if (existsSync(join(dir, 'index.json'))) return dir;
    const tmp = `${dir}.${randomBytes(4).toString('hex')}.tmp`;
    await mkdir(join(tmp, 'blobs', 'sha256'), { recursive: true });
    for (const digest of [manifestDigest, ...blobs.map((b) => b.digest)]) {
      const to = join(tmp, 'blobs', 'sha256', digest.slice('sha256:'.length));
      if (existsSync(to)) continue;
      await link(this.blobPath(digest), to).catch(() => copyFile(this.blobPath(digest), to));
    }
    await writeFile(join(tmp, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }));
    const index = {
      schemaVersion: 2,
      mediaType: MEDIA.ociIndex,
      manifests: [{ mediaType, digest: manifestDigest, size, annotations: { 'org.opencontainers.image.ref.name': 'latest' } }],
    };
    await writeFile(join(tmp, 'index.json'), JSON.stringify(index));
    await rm(dir, { recursive: true, force: true });
    await rename(tmp, dir);
    return dir;
  }

  /** The packed disk of a layout, once per image. */
  private async disk(manifestDigest: string, layoutDir: string): Promise<OciDisk> {
    const outDir = join(this.dir, 'disks');
    const note = join(outDir, `${manifestDigest.slice('sha256:'.length)}.json`);
    const known = JSON.parse(await readFile(note, 'utf8').catch(() => 'null')) as OciDisk | null;
    if (known && existsSync(known.path)) return known;
    const disk = await packOciLayoutDisk({ layoutDir, outDir });
    await writeFile(note, JSON.stringify(disk));
    return disk;
  }
}
