/**
 * The OpenAPI 3.1 document, generated from the route table and the zod schemas (z.toJSONSchema), so that it
 * cannot drift from what the server validates.
 */
import { z } from "zod";
import { policyJsonSchema } from "../../policy/schema.js";
import type { RouteDef } from "./http.js";
import { leap0PolicyField, networkPolicyField, registry } from "./schemas.js";

const REF = (id: string) => `#/components/schemas/${id}`;

/** Components are addressed by their place in the document; a per-schema $schema or $id would only confuse tools. */
function stripSchemaKey(s: Record<string, unknown>): Record<string, unknown> {
  const { $schema: _schema, $id: _id, ...rest } = s;
  return rest;
}

export function openApiDocument(routes: readonly RouteDef[], version: string): Record<string, unknown> {
  const override = (ctx: { zodSchema: unknown; jsonSchema: Record<string, unknown> }): void => {
    // The policy fields are validated by policyFromInput (for field-precise errors); document their real shapes.
    if (ctx.zodSchema === networkPolicyField) ctx.jsonSchema.anyOf = [{ $ref: REF("Policy") }, { $ref: REF("OpenSandboxNetworkPolicy") }];
    if (ctx.zodSchema === leap0PolicyField) ctx.jsonSchema.$ref = REF("Policy");
  };
  const generated = z.toJSONSchema(registry, { io: "input", uri: REF, unrepresentable: "any", override }) as { schemas: Record<string, Record<string, unknown>> };
  const schemas: Record<string, unknown> = { Policy: stripSchemaKey(policyJsonSchema()) };
  for (const [id, s] of Object.entries(generated.schemas)) schemas[id] = stripSchemaKey(s);

  const schemaRef = (s: z.ZodType): Record<string, unknown> => {
    const id = registry.get(s)?.id;
    return id ? { $ref: REF(id) } : stripSchemaKey(z.toJSONSchema(s, { io: "input", unrepresentable: "any", override }) as Record<string, unknown>);
  };

  const paths: Record<string, Record<string, unknown>> = {};
  for (const r of routes) {
    const pathParams = [...r.path.matchAll(/\{([^}]+)\}/g)].map((m) => ({
      name: m[1],
      in: "path",
      required: true,
      schema: m[1] === "port" ? { type: "integer", minimum: 1, maximum: 65535 } : { type: "string" },
    }));
    const query = (r.query ?? []).map((q) => ({
      name: q.name,
      in: "query",
      required: q.required ?? false,
      description: q.description,
      schema: q.schema,
      ...(q.schema.type === "array" ? { style: "form", explode: true } : {}),
    }));
    const responses: Record<string, unknown> = {};
    for (const [status, [description, schema]] of Object.entries(r.responses)) {
      responses[status] = schema ? { description, content: { "application/json": { schema: schemaRef(schema) } } } : { description };
    }
    const op: Record<string, unknown> = {
      operationId: `${r.family}_${r.method.toLowerCase()}_${r.path.replace(/[{}]/g, "").replace(/[^A-Za-z0-9]+/g, "_").replace(/^_|_$/g, "")}`,
      summary: r.summary,
      tags: [r.family],
      ...(pathParams.length + query.length > 0 ? { parameters: [...pathParams, ...query] } : {}),
      ...(r.body ? { requestBody: { required: !r.optionalBody, content: { "application/json": { schema: schemaRef(r.body) } } } } : {}),
      responses,
      ...(r.public ? { security: [] } : {}),
    };
    (paths[r.path] ??= {})[r.method.toLowerCase()] = op;
  }

  return {
    openapi: "3.1.0",
    info: {
      title: "sandbox-egress control",
      version,
      description:
        "Sandbox and snapshot lifecycle that carries each sandbox's egress policy through pause, snapshot and restore. " +
        "Three API families: OpenSandbox (canonical, camelCase), Leap0 (snake_case) and Tensorlake.",
    },
    components: {
      schemas,
      securitySchemes: {
        openSandboxApiKey: { type: "apiKey", in: "header", name: "OPEN-SANDBOX-API-KEY" },
        bearer: { type: "http", scheme: "bearer" },
        leap0Authorization: { type: "apiKey", in: "header", name: "leap0-authorization" },
      },
    },
    // Any one of the three headers carries the key (when the server has one).
    security: [{ openSandboxApiKey: [] }, { bearer: [] }, { leap0Authorization: [] }],
    tags: [
      { name: "opensandbox", description: "OpenSandbox lifecycle API and this project's extensions" },
      { name: "leap0", description: "Leap0 sandbox and snapshot routes" },
      { name: "tensorlake", description: "Tensorlake snapshot route" },
      { name: "meta", description: "Health and this document" },
    ],
    paths,
  };
}
