// The npm `writer-sdk` against Inkstand: chat whole and streamed, the `chat.stream` helper's
// events, the function-tool loop, errors, and a Knowledge Graph built from an uploaded file.
//
//     node writer_sdk.mjs        (with writer-sdk resolvable from this file's folder)
//
// The server comes from WRITER_BASE_URL and WRITER_API_KEY, as for any application using the
// SDK. Every check runs (one failing does not stop the others) and the script prints one JSON
// object: check name -> {"result": observations} or {"error": stack}.
// tests/e2e/test_node_sdk.py asserts on the observations: structure, never prose.

import fs from "node:fs";
import os from "node:os";
import path from "node:path";

import Writer from "writer-sdk";

const MODEL = "palmyra-x5";
const ASK = [{ role: "user", content: "Say hello to the reader." }];
const WEATHER = {
  type: "function",
  function: {
    name: "get_weather",
    description: "Get the current weather in a city",
    parameters: {
      type: "object",
      properties: { city: { type: "string", maxLength: 40 } },
      required: ["city"],
      additionalProperties: false,
    },
  },
};
const client = new Writer({ maxRetries: 0 });
const checks = {};

function greedy(fields = {}) {
  return { model: MODEL, messages: ASK, max_tokens: 8, temperature: 0, ...fields };
}

checks.chat_whole = async () => {
  const chat = await client.chat.chat(greedy());
  const choice = chat.choices[0];
  return {
    object: chat.object,
    id: chat.id,
    model: chat.model,
    role: choice.message.role,
    content: choice.message.content,
    finish_reason: choice.finish_reason,
    usage: chat.usage,
  };
};

checks.chat_streamed = async () => {
  const stream = await client.chat.chat(
    greedy({ stream: true, stream_options: { include_usage: true } }),
  );
  const chunks = [];
  for await (const chunk of stream) chunks.push(chunk);
  const whole = await client.chat.chat(greedy());
  return {
    objects: [...new Set(chunks.map((c) => c.object))],
    ids: [...new Set(chunks.map((c) => c.id))],
    text: chunks.map((c) => c.choices[0]?.delta?.content ?? "").join(""),
    finish_reasons: chunks.map((c) => c.choices[0]?.finish_reason ?? null),
    usage: chunks.at(-1).usage,
    whole_content: whole.choices[0].message.content,
  };
};

checks.stream_helper = async () => {
  const counts = {};
  const deltas = [];
  let contentDone = null;
  const runner = client.chat.stream(greedy({ stream_options: { include_usage: true } }));
  for (const name of ["chunk", "content", "content.delta", "content.done", "logprobs.content.delta",
    "message", "finalMessage", "finalContent", "finalChatCompletion", "totalUsage", "end"]) {
    runner.on(name, () => {
      counts[name] = (counts[name] ?? 0) + 1;
    });
  }
  runner.on("content.delta", (event) => deltas.push(event.delta));
  runner.on("content.done", (event) => {
    contentDone = event.content;
  });
  const final = await runner.finalChatCompletion();
  return {
    counts,
    deltas: deltas.join(""),
    content_done: contentDone,
    final_content: final.choices[0].message.content,
    final_role: final.choices[0].message.role,
    finish_reason: final.choices[0].finish_reason,
    usage: final.usage,
    total_usage: await runner.totalUsage(),
  };
};

checks.stream_helper_tool_call = async () => {
  const done = [];
  let deltas = 0;
  const runner = client.chat.stream(
    greedy({
      messages: [{ role: "user", content: "What is the weather in Paris?" }],
      tools: [WEATHER],
      tool_choice: { type: "function", function: { name: "get_weather" } },
      max_tokens: 60,
    }),
  );
  runner.on("tool_calls.function.arguments.delta", () => (deltas += 1));
  runner.on("tool_calls.function.arguments.done", (event) => done.push(event));
  const final = await runner.finalChatCompletion();
  return {
    argument_deltas: deltas,
    done: done.map((e) => ({ name: e.name, index: e.index, arguments: e.arguments })),
    finish_reason: final.choices[0].finish_reason,
    tool_calls: final.choices[0].message.tool_calls,
  };
};

checks.tool_loop = async () => {
  const messages = [{ role: "user", content: "What is the weather in Paris?" }];
  const first = await client.chat.chat(
    greedy({
      messages,
      tools: [WEATHER],
      tool_choice: { type: "function", function: { name: "get_weather" } },
      max_tokens: 60,
    }),
  );
  const message = first.choices[0].message;
  messages.push(message); // the SDK's message itself, as Writer's guides do
  for (const call of message.tool_calls ?? []) {
    messages.push({ role: "tool", tool_call_id: call.id, name: call.function.name, content: "22 C" });
  }
  const answer = await client.chat.chat(greedy({ messages, tools: [WEATHER], max_tokens: 24 }));
  return {
    call_finish_reason: first.choices[0].finish_reason,
    tool_calls: message.tool_calls,
    answer_finish_reason: answer.choices[0].finish_reason,
    answer_content: answer.choices[0].message.content,
    answer_tool_calls: answer.choices[0].message.tool_calls ?? null,
  };
};

async function caught(request) {
  try {
    await request();
  } catch (error) {
    return {
      class: error.constructor.name,
      is_bad_request: error instanceof Writer.BadRequestError,
      is_authentication: error instanceof Writer.AuthenticationError,
      status: error.status ?? null,
      error: error.error ?? null,
    };
  }
  return { class: null };
}

checks.errors = async () => {
  const stranger = new Writer({ apiKey: "not-a-key", maxRetries: 0 });
  return {
    bad_model: await caught(() => client.chat.chat(greedy({ model: "no-such-model" }))),
    bad_model_streamed: await caught(() =>
      client.chat.chat(greedy({ model: "no-such-model", stream: true })),
    ),
    bad_key: await caught(() => stranger.chat.chat(greedy())),
  };
};

async function waitForIngestion(fileId) {
  const deadline = Date.now() + 90_000;
  for (;;) {
    const file = await client.files.retrieve(fileId);
    if (file.status !== "in_progress" || Date.now() > deadline) return file;
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
}

checks.knowledge_graph = async () => {
  const folder = fs.mkdtempSync(path.join(os.tmpdir(), "inkstand-node-"));
  const local = path.join(folder, "ferry.txt");
  fs.writeFileSync(local, "The Kessa ferry leaves the quay at seven every morning.\n");
  const uploaded = await client.files.upload({
    content: fs.createReadStream(local), // as the SDK's README recommends
    "Content-Disposition": 'attachment; filename="ferry.txt"',
    "Content-Type": "text/plain",
  });
  const graph = await client.graphs.create({ name: "Harbour", description: "Ferry times" });
  try {
    await client.graphs.addFileToGraph(graph.id, { file_id: uploaded.id });
    const file = await waitForIngestion(uploaded.id);
    const question = { graph_ids: [graph.id], question: "When does the Kessa ferry leave?" };
    const answer = await client.graphs.question({ ...question, subqueries: false });
    const stream = await client.graphs.question({ ...question, subqueries: false, stream: true });
    const events = [];
    for await (const event of stream) events.push(event);
    return {
      file: { id: uploaded.id, name: uploaded.name, status: file.status, graph_ids: file.graph_ids },
      graph_id: graph.id,
      answer,
      streamed: events,
    };
  } finally {
    await client.graphs.delete(graph.id);
    await client.files.delete(uploaded.id);
    fs.rmSync(folder, { recursive: true, force: true });
  }
};

const only = process.argv.slice(2);
const report = {};
for (const [name, check] of Object.entries(checks)) {
  if (only.length && !only.includes(name)) continue;
  try {
    report[name] = { result: await check() };
  } catch (error) {
    report[name] = { error: error?.stack ?? String(error) };
  }
}
console.log(JSON.stringify(report));
