/**
 * Describe a JSON.parse failure without quoting the input: Node's messages include a snippet of the text,
 * and a policy file can hold literal secrets. Only the position (and line) are kept.
 */
export function describeJsonError(err: unknown, text: string): string {
  const message = err instanceof Error ? err.message : "";
  const m = /position (\d+)/.exec(message);
  if (m) {
    const pos = Number(m[1]);
    const line = text.slice(0, pos).split("\n").length;
    return `not valid JSON (syntax error at line ${line}, position ${pos}); fix the syntax`;
  }
  if (/end of JSON input/i.test(message)) return "not valid JSON (the document ends early); fix the syntax";
  // Node 20 gives no position for an unexpected token; `jq .` or any JSON linter will point at it.
  return "not valid JSON (unexpected token); fix the syntax, e.g. locate it with `jq . FILE`";
}
