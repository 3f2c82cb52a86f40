import type { Host } from "../policy/types.js";

export type { Host };

export type HostParseResult =
  | { readonly ok: true; readonly host: Host; readonly port: number }
  | { readonly ok: false; readonly error: string };

export type HostNormaliseResult =
  | { readonly ok: true; readonly host: Host }
  | { readonly ok: false; readonly error: string };

/** A named internal range (DESIGN.md "Addresses"). */
export interface InternalRange {
  readonly cidr: string;
  /** e.g. "loopback", "private", "link-local", "cloud-metadata", "documentation". */
  readonly category: string;
}
