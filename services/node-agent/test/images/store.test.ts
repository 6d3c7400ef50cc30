/**
 * The node's image store against a real registry (docker-registry on a random loopback port, an image pushed with
 * skopeo): pull by tag and by digest, blobs cached by digest and shared, a wrong pinned digest refused, missing
 * images and unreachable registries named, the size limit, a private repository that needs the node's credentials,
 * and `oci:` layouts only from the configured folders.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseConfig } from '../../src/config.js';
import { ImageStore } from '../../src/images/store.js';
import { addIndexTag, makeBusyboxLayout, pushLayout, startRegistry, type TestRegistry } from '../../src/testing/registry.js';

describe('image store against a real registry', () => {
  let dir: string;
  let open: TestRegistry;
  let priv: TestRegistry;
  let digest: string;
  let layout: string;
  const creds = { user: 'edge', pass: 'n0de-secret' };

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'na-images-'));
    open = await startRegistry(join(dir, 'reg-open'));
    priv = await startRegistry(join(dir, 'reg-priv'), creds);
    ({ layout } = makeBusyboxLayout(join(dir, 'img'), '1.2', { '/etc/vfw-version': 'vfw 1.2\n' }, ['/bin/sh', '-c', 'echo vfw up; sleep 3600']));
    digest = pushLayout(layout, '1.2', open.host, 'acme/vfw');
    assert.equal(pushLayout(layout, '1.2', priv.host, 'acme/private', creds), digest);
  });
  after(async () => {
    await open?.stop();
    await priv?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  const store = (extra: Record<string, unknown> = {}, registries: unknown[] = []): ImageStore =>
    new ImageStore(parseConfig({ stateDir: join(dir, 'state'), registries, ...extra }));

  test('pull by tag and by digest: every blob verified, cached by digest, one disk per image', async () => {
    const s = store({}, [{ host: open.host, plainHttp: true }]);
    const steps: string[] = [];
    const a = await s.resolve(`${open.host}/acme/vfw:1.2`, (m) => steps.push(m));
    assert.equal(a.digest, digest);
    assert.match(a.guestRef, /^oci-disk:oci-[0-9a-f]{16}$/);
    assert.ok(a.disk && existsSync(a.disk.path));
    assert.ok(steps.some((m) => /layer 1\/1 sha256:[0-9a-f]{12} verified/.test(m)), steps.join('\n'));
    assert.match(steps.at(-1)!, new RegExp(`pulled ${open.host}/acme/vfw:1.2: ${digest}`));
    const blobs = readdirSync(join(dir, 'state', 'images', 'blobs', 'sha256'));
    assert.equal(blobs.length, 3, 'manifest, config, layer');
    const b = await s.resolve(`${open.host}/acme/vfw@${digest}`);
    assert.equal(b.disk?.serial, a.disk?.serial, 'same image, same disk');
    assert.equal(readdirSync(join(dir, 'state', 'images', 'blobs', 'sha256')).length, 3, 'nothing fetched twice');
  });

  test('a pinned digest the registry does not have, a missing tag, an unknown host: clear errors naming the image', async () => {
    const s = store({}, [{ host: open.host, plainHttp: true }]);
    const wrong = `sha256:${'0'.repeat(64)}`;
    await assert.rejects(s.resolve(`${open.host}/acme/vfw:1.2@${wrong}`), (err: Error & { code?: string }) => {
      assert.equal(err.code, 'UNAVAILABLE');
      assert.match(err.message, new RegExp(`^image ${open.host}/acme/vfw:1.2@${wrong}: digest mismatch: the registry's manifest is ${digest}, the reference pins ${wrong}`));
      return true;
    });
    await assert.rejects(s.resolve(`${open.host}/acme/vfw:9.9`), /image 127\.0\.0\.1:\d+\/acme\/vfw:9\.9: manifest 9\.9 not found/);
    await assert.rejects(s.resolve(`${open.host}/acme/vfw@${wrong}`), new RegExp(`manifest ${wrong} not found`));
    await assert.rejects(s.resolve(`${open.host}/acme/nothere:1`), /not found/);
    const dead = `127.0.0.1:${1 + (Number(open.host.split(':')[1]) % 60000)}`;
    await assert.rejects(store({}, [{ host: dead, plainHttp: true }]).resolve(`${dead}/acme/vfw:1.2`), /unreachable/);
  });

  test('a manifest list (OCI index): the linux/amd64 image is pulled; a pinned index digest is verified', async () => {
    const indexDigest = addIndexTag(layout, digest, 'multi');
    assert.equal(pushLayout(layout, 'multi', open.host, 'acme/multi'), indexDigest);
    const s = store({ stateDir: join(dir, 'multi') }, [{ host: open.host, plainHttp: true }]);
    const r = await s.resolve(`${open.host}/acme/multi:multi`);
    assert.equal(r.digest, digest, 'the platform manifest runs');
    assert.equal((await s.resolve(`${open.host}/acme/multi@${indexDigest}`)).digest, digest);
  });

  test('a registry not listed as plainHttp is spoken to over HTTPS only', async () => {
    await assert.rejects(store().resolve(`${open.host}/acme/vfw:1.2`), /unreachable/);
  });

  test('the size limit refuses an image before fetching its layers', async () => {
    await assert.rejects(
      store({ stateDir: join(dir, 'small'), images: { maxImageBytes: 4096 } }, [{ host: open.host, plainHttp: true }]).resolve(`${open.host}/acme/vfw:1.2`),
      /over this node's limit of 4096 \(images\.maxImageBytes\)/,
    );
    assert.equal(existsSync(join(dir, 'small', 'images', 'blobs', 'sha256')) && readdirSync(join(dir, 'small', 'images', 'blobs', 'sha256')).length > 1, false);
  });

  test('a private repository needs the credentials of the node config', async () => {
    await assert.rejects(store({ stateDir: join(dir, 'p0') }, [{ host: priv.host, plainHttp: true }]).resolve(`${priv.host}/acme/private:1.2`), /needs credentials/);
    await assert.rejects(
      store({ stateDir: join(dir, 'p1') }, [{ host: priv.host, plainHttp: true, username: creds.user, password: 'wrong' }]).resolve(`${priv.host}/acme/private:1.2`),
      /refused/,
    );
    const ok = await store({ stateDir: join(dir, 'p2') }, [{ host: priv.host, plainHttp: true, username: creds.user, password: creds.pass }]).resolve(`${priv.host}/acme/private:1.2`);
    assert.equal(ok.digest, digest);
  });

  test('oci: layouts only from images.ociLayoutRoots', async () => {
    await assert.rejects(store().resolve(`oci:${layout}:1.2`), /only from the node's images\.ociLayoutRoots \(none configured\)/);
    const elsewhere = join(dir, 'elsewhere');
    mkdirSync(elsewhere);
    await assert.rejects(store({ images: { ociLayoutRoots: [elsewhere] } }).resolve(`oci:${layout}:1.2`), /ociLayoutRoots/);
    const r = await store({ images: { ociLayoutRoots: [join(dir, 'img')] } }).resolve(`oci:${layout}:1.2`);
    assert.equal(r.digest, digest);
    assert.match(r.guestRef, /^oci-disk:oci-[0-9a-f]{16}:1\.2$/);
    await assert.rejects(store({ images: { ociLayoutRoots: [join(dir, 'img')] } }).resolve(`oci:${layout}:nope`), /no manifest tagged nope/);
  });

  test('builtin images need nothing', async () => {
    assert.deepEqual(await store().resolve('builtin:vrouter'), { guestRef: 'builtin:vrouter' });
  });
});
