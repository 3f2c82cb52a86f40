export { LocalDriver, LOCAL_IMAGE, type LocalDriverOptions } from "./driver.js";
export { readSnapshotManifest, verifySnapshot, MEDIA_TYPES } from "./oci.js";
export { detectFreezer, type FreezerKind } from "./freezer.js";
export { probeCriu } from "./criu.js";
export { measureLocalLifecycle, type LifecycleTimings } from "./measure.js";
