/**
 * Bearer-token auth against a real registry: Debian's docker-registry with `auth: token` trusts a small token
 * service (startTokenService: the distribution token spec, RS256 JWTs with an x5c certificate). The node's
 * registry client follows the registry's 401 challenge to the realm with its configured credentials, gets a token
 * for `repository:<name>:pull`, pulls with it, and reuses it; without or with wrong credentials the error names
 * the token service and the image.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseConfig } from '../../src/config.js';
import { ImageStore } from '../../src/images/store.js';
import { makeBusyboxLayout, pushLayoutAsync, startRegistry, startTokenService, type TestRegistry, type TokenService } from '../../src/testing/registry.js';

describe('registry bearer-token auth (docker-registry auth: token)', () => {
  let dir: string;
  let tokens: TokenService;
  let reg: TestRegistry;
  let digest: string;
  const creds = { user: 'edge-node', pass: 't0ken-secret' };

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'na-regtoken-'));
    tokens = await startTokenService(join(dir, 'tokens'), creds);
    reg = await startRegistry(join(dir, 'reg'), { token: tokens });
    const { layout } = makeBusyboxLayout(join(dir, 'img'), '1.0', { '/etc/tok': 'tok\n' }, ['/bin/sh', '-c', 'echo tok; sleep 3600']);
    digest = await pushLayoutAsync(layout, '1.0', reg.host, 'acme/tok', creds); // this process serves the tokens: no blocking push
  });
  after(async () => {
    await reg?.stop();
    await tokens?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  const store = (name: string, registry: Record<string, unknown>): ImageStore =>
    new ImageStore(parseConfig({ stateDir: join(dir, name), registries: [{ host: reg.host, plainHttp: true, ...registry }] }));

  test('the registry really asks for a token, and refuses a forged one', async () => {
    const res = await fetch(`http://${reg.host}/v2/acme/tok/manifests/1.0`);
    assert.equal(res.status, 401);
    assert.match(res.headers.get('www-authenticate') ?? '', new RegExp(`^Bearer realm="${tokens.realm}",service="${tokens.service}",scope="repository:acme/tok:pull"`));
    // and checks what it gets: a token not signed by the trusted key is refused
    const forged = ['{"typ":"JWT","alg":"RS256"}', JSON.stringify({ iss: tokens.issuer, aud: tokens.service, exp: 4102444800, access: [{ type: 'repository', name: 'acme/tok', actions: ['pull'] }] }), 'sig']
      .map((p) => Buffer.from(p).toString('base64url'))
      .join('.');
    assert.equal((await fetch(`http://${reg.host}/v2/acme/tok/manifests/1.0`, { headers: { authorization: `Bearer ${forged}` } })).status, 401);
  });

  test("with the node's credentials: token for repository:acme/tok:pull, pulled and verified, the token reused", async () => {
    const s = store('ok', { username: creds.user, password: creds.pass });
    const before = tokens.requests.length;
    const r = await s.resolve(`${reg.host}/acme/tok:1.0`);
    assert.equal(r.digest, digest);
    const asked = tokens.requests.slice(before);
    assert.deepEqual(asked, [{ scope: 'repository:acme/tok:pull', user: creds.user, granted: true }], 'one token, pull only, asked with the credentials');
    // the same client again (another reference to the image): the token is kept per repository scope
    assert.equal((await s.resolve(`${reg.host}/acme/tok@${digest}`)).digest, digest);
    assert.equal(tokens.requests.length, before + 1, 'no second token request');
  });

  test('no credentials, or wrong ones: the token service refuses and the error names it and the image', async () => {
    await assert.rejects(store('anon', {}).resolve(`${reg.host}/acme/tok:1.0`), (err: Error & { code?: string }) => {
      assert.equal(err.code, 'UNAVAILABLE');
      assert.match(err.message, new RegExp(`^image ${reg.host}/acme/tok:1\\.0: token service 127\\.0\\.0\\.1:\\d+ answered 401 \\(no credentials in the node config\\)`));
      return true;
    });
    await assert.rejects(store('wrong', { username: creds.user, password: 'nope' }).resolve(`${reg.host}/acme/tok:1.0`), /token service 127\.0\.0\.1:\d+ answered 401$/);
    assert.ok(tokens.requests.some((q) => q.user === `!${creds.user}` && !q.granted));
  });
});
