import type { FieldError } from "../policy/types.js";

/**
 * What the lifecycle service can answer besides success. The REST adapters map `kind` to a status and their
 * own error body; the service knows nothing about HTTP.
 */
export type ServiceErrorKind =
  | "invalid" // 400: the request is wrong; `errors` names every field
  | "unsupported" // 400: valid, but this host cannot do it (the message says why)
  | "not-found" // 404
  | "conflict" // 409: the current state does not allow it; nothing changed
  | "failed" // 500: the runtime failed; the message says what state things were left in
  | "unavailable"; // 503: the control module is shutting down

export class ServiceError extends Error {
  constructor(
    readonly kind: ServiceErrorKind,
    message: string,
    readonly errors: readonly FieldError[] = [],
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = "ServiceError";
  }
}

export function invalid(errors: readonly FieldError[]): ServiceError {
  const first = errors[0];
  const message = first
    ? `${first.field}: ${first.error}${errors.length > 1 ? ` (and ${errors.length - 1} more: ${errors.slice(1, 4).map((e) => e.field).join(", ")}${errors.length > 4 ? ", …" : ""})` : ""}`
    : "invalid request";
  return new ServiceError("invalid", message, errors);
}

export function invalidField(field: string, error: string): ServiceError {
  return invalid([{ field, error }]);
}

export const STATUS_OF: Readonly<Record<ServiceErrorKind, number>> = Object.freeze({
  invalid: 400,
  unsupported: 400,
  "not-found": 404,
  conflict: 409,
  failed: 500,
  unavailable: 503,
});
