/**
 * Every error code of the TLS module, in one place. Callers (CLI, proxy start-up, admin) branch on `code`,
 * never on message text; messages are for operators and say what to do.
 */
export const TLS_ERROR_CODES = {
  "ca-not-found": "No CA certificate (ca.pem) in the CA directory.",
  "ca-key-not-found": "ca.pem exists but its private key (ca-key.pem) does not.",
  "ca-key-permissions": "ca-key.pem is accessible to group or others; it must be mode 0600.",
  "ca-exists": "A CA already exists in the CA directory; replacing it needs force.",
  "ca-invalid": "ca.pem is not a usable CA certificate.",
  "ca-key-invalid": "ca-key.pem is not a readable, unencrypted private key.",
  "ca-key-mismatch": "ca-key.pem is not the private key of ca.pem.",
  "ca-unsupported-key": "The CA key type is not supported (use EC P-256/P-384/P-521 or RSA ≥ 2048).",
  "ca-expired": "The CA certificate is outside its validity period.",
  "ca-locked": "Another process holds the CA directory's creation lock.",
  "invalid-host": "The host is neither a normalised DNS name nor an IP literal.",
} as const;

export type TlsErrorCode = keyof typeof TLS_ERROR_CODES;

export class TlsError extends Error {
  override readonly name = "TlsError";
  readonly code: TlsErrorCode;

  constructor(code: TlsErrorCode, message?: string, options?: { cause?: unknown }) {
    super(message ?? TLS_ERROR_CODES[code], options);
    this.code = code;
  }
}

export function isTlsError(err: unknown, code?: TlsErrorCode): err is TlsError {
  return err instanceof TlsError && (code === undefined || err.code === code);
}
