/**
 * A VNFD's `image.ref`, parsed once (shared API.md, "Images"): a built-in image, an OCI image layout on the node,
 * or a reference into an OCI distribution registry, `<host[:port]>/<repository>[:<tag>][@sha256:<hex>]`. The
 * registry host is always explicit (there is no default registry), so a ref is never ambiguous.
 */
export type ImageRef =
  | { kind: 'builtin'; name: string; ref: string }
  | { kind: 'oci'; layoutDir: string; tag?: string; ref: string }
  | { kind: 'registry'; host: string; repository: string; tag?: string; digest?: string; ref: string };

const BUILTIN = /^builtin:([a-z0-9][a-z0-9-]{0,62})$/;
const OCI = /^oci:(\/[^\s:]+)(?::([A-Za-z0-9_.-]{1,128}))?$/;
/** Host: a DNS name with a dot, `localhost`, or an IPv4 address, with an optional port. */
const HOST = '(?:localhost|[A-Za-z0-9](?:[A-Za-z0-9-]{0,62})(?:\\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}))+)(?::[0-9]{1,5})?';
const COMPONENT = '[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*';
const REGISTRY = new RegExp(`^(${HOST})/(${COMPONENT}(?:/${COMPONENT}){0,8})(?::([A-Za-z0-9_][A-Za-z0-9_.-]{0,127}))?(?:@(sha256:[a-f0-9]{64}))?$`);

/** Parses an image reference; null when it is none of the three forms. */
export function parseImageRef(ref: string): ImageRef | null {
  const b = BUILTIN.exec(ref);
  if (b) return { kind: 'builtin', name: b[1]!, ref };
  const o = OCI.exec(ref);
  if (o) {
    if (o[1]!.split('/').includes('..')) return null;
    return { kind: 'oci', layoutDir: o[1]!, ...(o[2] ? { tag: o[2] } : {}), ref };
  }
  if (ref.length > 1024) return null;
  const r = REGISTRY.exec(ref);
  if (r) {
    const port = /:(\d+)$/.exec(r[1]!);
    if (port && Number(port[1]) > 65535) return null;
    return { kind: 'registry', host: r[1]!, repository: r[2]!, ...(r[3] ? { tag: r[3] } : {}), ...(r[4] ? { digest: r[4] } : {}), ref };
  }
  return null;
}

/** What `image.ref` may be, for error messages. */
export const IMAGE_REF_FORMS = 'builtin:<name>, oci:/abs/layout[:tag], or <host[:port]>/<repository>[:tag][@sha256:<digest>]';
