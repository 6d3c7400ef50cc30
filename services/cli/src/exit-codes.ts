/** Exit codes of `edgenfv`, one per error class (docs/cli.md). */
import type { ErrorCode } from '@edgenfv/contracts';

export const EXIT_OK = 0;
/** Usage errors: unknown command or option, missing argument (commander). */
export const EXIT_USAGE = 2;

export const EXIT_CODES: Readonly<Record<ErrorCode, number>> = Object.freeze({
  INTERNAL: 1,
  INVALID_ARGUMENT: 3,
  NOT_FOUND: 4,
  ALREADY_EXISTS: 5,
  CONFLICT: 6,
  QUOTA_EXCEEDED: 7,
  UNSCHEDULABLE: 8,
  PERMISSION_DENIED: 9,
  UNAVAILABLE: 10,
});

export function exitCodeOf(code: ErrorCode): number {
  return EXIT_CODES[code] ?? 1;
}
