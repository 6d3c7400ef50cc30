/**
 * Value objects parsed once at the edge: nothing past the parser handles raw strings.
 * They are branded strings in canonical form, so they serialize as plain JSON.
 */
declare const brand: unique symbol;
type Brand<T, B extends string> = T & { readonly [brand]: B };

/** PCI address in canonical `dddd:bb:dd.f` form, lower case. */
export type PciAddress = Brand<string, 'PciAddress'>;
/** MAC address in canonical `aa:bb:cc:dd:ee:ff` form, lower case. */
export type MacAddress = Brand<string, 'MacAddress'>;

const PCI_RE = /^(?:([0-9a-fA-F]{4}):)?([0-9a-fA-F]{2}):([0-1][0-9a-fA-F])\.([0-7])$/;
const MAC_RE = /^([0-9a-fA-F]{2})([:-]?)([0-9a-fA-F]{2})\2([0-9a-fA-F]{2})\2([0-9a-fA-F]{2})\2([0-9a-fA-F]{2})\2([0-9a-fA-F]{2})$/;

export function isPciAddress(s: unknown): s is string {
  return typeof s === 'string' && PCI_RE.test(s);
}
export function parsePciAddress(s: string): PciAddress {
  const m = PCI_RE.exec(s);
  if (!m) throw new TypeError(`not a PCI address: ${JSON.stringify(s)} (expected dddd:bb:dd.f)`);
  return `${(m[1] ?? '0000').toLowerCase()}:${m[2]!.toLowerCase()}:${m[3]!.toLowerCase()}.${m[4]}` as PciAddress;
}

export function isMacAddress(s: unknown): s is string {
  return typeof s === 'string' && MAC_RE.test(s);
}
export function parseMacAddress(s: string): MacAddress {
  const m = MAC_RE.exec(s);
  if (!m) throw new TypeError(`not a MAC address: ${JSON.stringify(s)}`);
  return [m[1], m[3], m[4], m[5], m[6], m[7]].map((x) => x!.toLowerCase()).join(':') as MacAddress;
}
/** A locally administered unicast MAC (first octet x2/x6/xA/xE) from 5 bytes of entropy or a hash. */
export function localMac(bytes: Uint8Array): MacAddress {
  if (bytes.length < 5) throw new RangeError('localMac needs 5 bytes');
  const octets = [0x02, bytes[0]!, bytes[1]!, bytes[2]!, bytes[3]!, bytes[4]!];
  return octets.map((b) => b.toString(16).padStart(2, '0')).join(':') as MacAddress;
}

export const DNS_LABEL_RE = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;
export function isDnsLabel(s: unknown): s is string {
  return typeof s === 'string' && DNS_LABEL_RE.test(s);
}
