// "View code": a chat request as a Python `writerai` snippet and as a curl command.
// The key is never written into them: both read WRITER_API_KEY from the environment.

const WIDTH = 88; // a line of the snippet, as black would keep it

function scalar(value) {
  if (value === null || value === undefined) return "None";
  if (value === true) return "True";
  if (value === false) return "False";
  return JSON.stringify(value); // JSON's string escapes are Python's too
}

function flat(value) {
  if (Array.isArray(value)) return `[${value.map(flat).join(", ")}]`;
  if (value !== null && typeof value === "object") {
    const items = Object.entries(value).map(([k, v]) => `${JSON.stringify(k)}: ${flat(v)}`);
    return `{${items.join(", ")}}`;
  }
  return scalar(value);
}

/** `value` (plain JSON data) as a Python literal: on one line if it fits, else one item a line. */
export function pythonLiteral(value, indent = "") {
  if (value === null || typeof value !== "object") return scalar(value);
  const oneLine = flat(value);
  if (indent.length + oneLine.length <= WIDTH) return oneLine;
  const inner = indent + "    ";
  const items = Array.isArray(value)
    ? value.map((item) => inner + pythonLiteral(item, inner) + ",")
    : Object.entries(value).map(([k, v]) => `${inner}${JSON.stringify(k)}: ${pythonLiteral(v, inner)},`);
  const [open, close] = Array.isArray(value) ? ["[", "]"] : ["{", "}"];
  return `${open}\n${items.join("\n")}\n${indent}${close}`;
}

/** The request `body` (without streaming) as `client.chat.chat(...)`. */
export function pythonSnippet(body, origin) {
  const args = Object.entries(body)
    .filter(([name]) => name !== "stream" && name !== "stream_options")
    .map(([name, value]) => `    ${name}=${pythonLiteral(value, "    ")},`);
  return [
    "from writerai import Writer",
    "",
    `# export WRITER_BASE_URL=${origin} WRITER_API_KEY=<your Inkstand key>`,
    "client = Writer()",
    "chat = client.chat.chat(",
    ...args,
    ")",
    "print(chat.choices[0].message.content)",
  ].join("\n");
}

function shellQuote(text) {
  return `'${text.replaceAll("'", `'\\''`)}'`;
}

/** The request `body` (without streaming) as a curl command. */
export function curlSnippet(body, origin) {
  const { stream, stream_options, ...whole } = body;
  return [
    `curl ${origin}/v1/chat \\`,
    '  -H "Authorization: Bearer $WRITER_API_KEY" \\',
    '  -H "Content-Type: application/json" \\',
    `  -d ${shellQuote(JSON.stringify(whole, null, 2))}`,
  ].join("\n");
}
