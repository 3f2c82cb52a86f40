/** Tensorlake's snapshot route: `snapshot_type` filesystem | memory, answered 202 {snapshot_id, status}. */
import type { LifecycleService } from "../service.js";
import { route, type RouteDef } from "./http.js";
import * as S from "./schemas.js";

const E = (d: string) => [d, S.tensorlakeError] as const;

export function tensorlakeRoutes(service: LifecycleService): RouteDef[] {
  return [
    route({
      method: "POST",
      path: "/sandboxes/{sandboxId}/snapshot",
      family: "tensorlake",
      summary: 'Snapshot a running sandbox; snapshot_type "filesystem" (default) or "memory" (400 with the reason where this host cannot)',
      body: S.tensorlakeSnapshotRequest,
      optionalBody: true,
      responses: {
        202: ["Snapshot creation initiated; GET /v1/snapshots/{snapshot_id} follows it", S.tensorlakeSnapshotResponse],
        400: E("Another snapshot_type, or memory snapshots unavailable here (the message says why)"),
        401: E("Missing or wrong API key"),
        404: E("No such sandbox"),
        409: E("The sandbox is not running"),
      },
      handler: async ({ params, body }) => {
        const { row } = await service.snapshot(params.sandboxId!, { type: body.snapshot_type ?? "filesystem" });
        return { status: 202, body: { snapshot_id: row.id, status: "creating" } };
      },
    }),
  ];
}
