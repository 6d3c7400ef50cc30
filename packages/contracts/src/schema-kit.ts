/**
 * Small TypeBox helpers for the contract's JSON Schemas: each schema is written once and its TypeScript type is
 * derived from it (`Static<typeof X>`), so the validator and the compiler see the same shape. The helpers emit the
 * JSON Schema keywords Ajv's messages are written for (`enum` rather than an `anyOf` of constants).
 */
import { Type, type TProperties, type TSchema, type TObject, type Static, type TUnsafe } from '@sinclair/typebox';

export { Type, type Static, type TSchema };

/** A closed object: unknown fields are refused by name. */
export function Closed<P extends TProperties>(properties: P): TObject<P> {
  return Type.Object(properties, { additionalProperties: false });
}

/** `{enum: [...]}` typed as the union of its values. */
export function Enum<const T extends readonly (string | number)[]>(values: T): TUnsafe<T[number]> {
  return Type.Unsafe<T[number]>({ enum: [...values] });
}

/** A map with bounded keys (`propertyNames`) and values, as plain JSON Schema (TypeBox's Record emits patternProperties). */
export function BoundedMap<V extends TSchema>(keys: object, value: V, maxProperties: number): TUnsafe<Record<string, Static<V>>> {
  return Type.Unsafe<Record<string, Static<V>>>({ type: 'object', maxProperties, propertyNames: keys, additionalProperties: value });
}

/**
 * A union discriminated on `type` that Ajv validates with its `discriminator` keyword (`oneOf` of closed objects
 * with a constant `type`): an unknown type is one clear error, not one per branch.
 */
export function TaggedUnion<T extends TSchema[]>(tag: string, tags: readonly string[], variants: [...T]): TUnsafe<Static<T[number]>> {
  return Type.Unsafe<Static<T[number]>>({
    type: 'object',
    required: [tag],
    properties: { [tag]: { enum: [...tags] } },
    discriminator: { propertyName: tag },
    oneOf: variants,
  });
}

// ---- field schemas shared by the VNFD, the requests and the records
export const DNS_LABEL_PATTERN = '^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$';
const IFNAME_PATTERN = '^[a-zA-Z][a-zA-Z0-9_.-]{0,14}$';
const MAC_PATTERN = '^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$';
const MAX_COUNT = 1_000_000_000;

export const DnsLabel = Type.String({ minLength: 1, maxLength: 63, pattern: DNS_LABEL_PATTERN });
/** VNF and op occurrence ids (`vnf-...`, `op-...`). */
export const Id = Type.String({ minLength: 1, maxLength: 128, pattern: '^[a-z0-9]([a-z0-9-]{0,126}[a-z0-9])?$' });
export const RequestId = Type.String({ minLength: 1, maxLength: 128, pattern: '^[\\x21-\\x7e]+$' });
export const IfName = Type.String({ minLength: 1, maxLength: 15, pattern: IFNAME_PATTERN });
export const Mac = Type.String({ maxLength: 17, pattern: MAC_PATTERN });
export const ShortText = Type.String({ maxLength: 256 });
export const Count = Type.Integer({ minimum: 0, maximum: MAX_COUNT });
