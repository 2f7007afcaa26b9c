// The playground's side of the API: requests with the user's key, Writer's error envelope,
// and server-sent events read from a fetch body (EventSource cannot POST or send a key).

/** A refused or failed request, described as Writer's envelope describes it. */
export class ApiError extends Error {
  constructor(status, envelope, retryAfter) {
    super(describe(status, envelope, retryAfter));
    this.name = "ApiError";
    this.status = status;
    this.envelope = envelope;
    this.retryAfter = retryAfter;
  }
}

function describe(status, envelope, retryAfter) {
  const first = envelope && Array.isArray(envelope.errors) ? envelope.errors[0] : null;
  let text = first && first.description ? first.description : `The server answered ${status}.`;
  if (retryAfter) text += ` Try again in ${retryAfter} s.`;
  return text;
}

async function readEnvelope(response) {
  try {
    return await response.json();
  } catch {
    return null;
  }
}

/** `fetch` with the key; a status other than 2xx becomes an ApiError. */
export async function request(path, key, { method = "GET", body, signal } = {}) {
  const headers = { Authorization: `Bearer ${key}` };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    signal,
    cache: "no-store",
  });
  if (!response.ok) {
    const envelope = await readEnvelope(response);
    throw new ApiError(response.status, envelope, response.headers.get("Retry-After"));
  }
  return response;
}

export async function getJson(path, key) {
  return (await request(path, key)).json();
}

/** The events of an SSE body as `{event, data}`, in order; comments are skipped. */
export async function* readEvents(body) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let pending = "";
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      pending += value.replace(/\r\n?/g, "\n");
      let end;
      while ((end = pending.indexOf("\n\n")) >= 0) {
        const block = pending.slice(0, end);
        pending = pending.slice(end + 2);
        const event = parseEvent(block);
        if (event) yield event;
      }
    }
  } finally {
    reader.releaseLock();
  }
}

function parseEvent(block) {
  let event = "message";
  const data = [];
  for (const line of block.split("\n")) {
    if (line === "" || line.startsWith(":")) continue;
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "event") event = value;
    else if (field === "data") data.push(value);
  }
  return data.length ? { event, data: data.join("\n") } : null;
}

/** The chunks of a streamed `POST /v1/chat`; an `event: error` frame throws its envelope. */
export async function* chatChunks(key, body, signal) {
  const response = await request("/v1/chat", key, { method: "POST", body, signal });
  for await (const { event, data } of readEvents(response.body)) {
    if (event === "error") {
      let envelope = null;
      try {
        envelope = JSON.parse(data);
      } catch {
        // not JSON: the generic description below
      }
      throw new ApiError(response.status, envelope, null);
    }
    if (data === "[DONE]") return;
    yield JSON.parse(data);
  }
}
