export {
  CA_CERT_FILE,
  CA_KEY_FILE,
  CertificateAuthority,
  caPaths,
  type CaCreateOptions,
  type CaKeyType,
  type CaPaths,
  type IssueFields,
} from "./ca.js";
export { loadX509Encoder } from "./x509.js";
export { LeafCertificates, type LeafKeyType, type LeafOptions, type LeafStats } from "./leaf.js";
export { caInit, caShow } from "./commands.js";
export { TLS_ERROR_CODES, TlsError, isTlsError, type TlsErrorCode } from "./errors.js";
