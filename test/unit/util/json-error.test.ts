import { describe, expect, it } from "vitest";
import { describeJsonError } from "../../../src/util/json-error.js";

describe("describeJsonError", () => {
  it("names the line and position but never quotes the text, which may hold a secret", () => {
    const text = '{\n  "transforms": [{ "inject_headers": { "Authorization": Bearer sk-literal-secret } }]\n}';
    let err: unknown;
    try {
      JSON.parse(text);
    } catch (e) {
      err = e;
    }
    const msg = describeJsonError(err, text);
    expect(msg).toMatch(/not valid JSON/);
    expect(msg).not.toContain("sk-literal");
    expect(msg).not.toContain("Bearer");
  });

  it("names the line and position when the parser reports one", () => {
    let err: unknown;
    try {
      JSON.parse('{\n "a": 1,\n }');
    } catch (e) {
      err = e;
    }
    expect(describeJsonError(err, '{\n "a": 1,\n }')).toMatch(/line 3, position \d+/);
  });
});
