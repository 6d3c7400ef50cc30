/** The error body's JSON Schema (for the records that carry one); errors.ts keeps the classes and the type. */
import type { ErrorBody } from './errors.js';
import { ERROR_CODES } from './errors.js';
import { Type } from './schema-kit.js';

export const ErrorBodySchema = Type.Unsafe<ErrorBody>({
  type: 'object',
  additionalProperties: false,
  required: ['code', 'message'],
  properties: { code: { enum: [...ERROR_CODES] }, message: { type: 'string' }, details: {} },
});
