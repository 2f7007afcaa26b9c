// The playground page: settings, the conversation, streamed answers, "View code".
// Plain ES modules, no framework; every request goes to this origin with the user's key.

import { ApiError, chatChunks, getJson } from "./api.js";
import { curlSnippet, pythonSnippet } from "./code.js";

const KEY_ITEM = "inkstand.apiKey";
const MODEL_ITEM = "inkstand.model";
const SEND_MARK = "inkstand:send";
const FIRST_TOKEN_MARK = "inkstand:first-token";

const $ = (id) => document.getElementById(id);
const ui = {
  key: $("key"),
  model: $("model"),
  system: $("system"),
  temperature: $("temperature"),
  maxTokens: $("max-tokens"),
  tools: $("tools"),
  responseFormat: $("response-format"),
  graphs: $("graphs"),
  conversation: $("conversation"),
  notice: $("notice"),
  composer: $("composer"),
  message: $("message"),
  send: $("send"),
  stop: $("stop"),
  newChat: $("new-chat"),
  viewCode: $("view-code"),
  code: $("code"),
};

const history = []; // the turns sent as the conversation (the system prompt is added per send)
let running = null; // the AbortController of the answer being streamed
let chatNumber = 0; // "New chat" counts up, so an answer ending late stays out of the next chat

// -- notices --------------------------------------------------------------------------------

function notify(text) {
  ui.notice.textContent = text;
  ui.notice.hidden = false;
}

function clearNotice() {
  ui.notice.textContent = "";
  ui.notice.hidden = true;
}

// -- the key, models and graphs -------------------------------------------------------------

function currentKey() {
  return ui.key.value.trim();
}

function fillSelect(select, items, chosen) {
  select.replaceChildren(
    ...items.map((item) => {
      const option = new Option(item.label, item.value);
      option.selected = chosen.includes(item.value);
      return option;
    }),
  );
}

function showModels(models) {
  const saved = localStorage.getItem(MODEL_ITEM);
  const chosen = models.some((m) => m.id === saved) ? saved : models[0] && models[0].id;
  fillSelect(ui.model, models.map((m) => ({ label: m.id, value: m.id })), [chosen]);
}

function showGraphs(graphs) {
  const chosen = [...ui.graphs.selectedOptions].map((o) => o.value);
  fillSelect(ui.graphs, graphs.map((g) => ({ label: g.name || g.id, value: g.id })), chosen);
}

async function loadChoices() {
  const key = currentKey();
  if (ui.conversation.querySelector(".empty")) showEmpty();
  if (!key) {
    showModels([]);
    showGraphs([]);
    return;
  }
  try {
    const { models } = await getJson("/v1/models", key);
    const { data } = await getJson("/v1/graphs?limit=100", key);
    if (key !== currentKey()) return; // typed on meanwhile: that key's answer counts
    showModels(models);
    showGraphs(data);
    clearNotice();
  } catch (error) {
    if (key !== currentKey()) return;
    showModels([]);
    notify(error instanceof ApiError ? error.message : `Cannot reach the server: ${error.message}`);
  }
}

let keyTimer = 0;
function onKeyInput() {
  localStorage.setItem(KEY_ITEM, currentKey());
  clearTimeout(keyTimer);
  keyTimer = setTimeout(loadChoices, 300);
}

// -- the request ----------------------------------------------------------------------------

function parseSetting(textarea, label, isValid, shape) {
  const text = textarea.value.trim();
  if (!text) return undefined;
  let value;
  try {
    value = JSON.parse(text);
  } catch (error) {
    throw new Error(`${label} is not valid JSON: ${error.message}`);
  }
  if (!isValid(value)) throw new Error(`${label} must be ${shape}.`);
  return value;
}

function isObject(value) {
  return value !== null && typeof value === "object" && !Array.isArray(value);
}

/** The chat request for the conversation so far, plus `message` when given. */
function buildBody(message) {
  const messages = [];
  const system = ui.system.value.trim();
  if (system) messages.push({ role: "system", content: system });
  messages.push(...history);
  if (message) messages.push({ role: "user", content: message });
  const body = { model: ui.model.value, messages };
  if (ui.temperature.value !== "") body.temperature = Number(ui.temperature.value);
  if (ui.maxTokens.value !== "") body.max_tokens = Number(ui.maxTokens.value);
  const tools = parseSetting(ui.tools, "Tools", Array.isArray, "a JSON array") || [];
  const graphIds = [...ui.graphs.selectedOptions].map((o) => o.value);
  if (graphIds.length) tools.push({ type: "graph", function: { graph_ids: graphIds } });
  if (tools.length) body.tools = tools;
  const format = parseSetting(ui.responseFormat, "Response format", isObject, "a JSON object");
  if (format) body.response_format = format;
  return body;
}

// -- the transcript -------------------------------------------------------------------------

function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text) node.textContent = text;
  return node;
}

function addMessage(role, text) {
  ui.conversation.querySelector(".empty")?.remove();
  const bubble = element("article", `message ${role}`);
  bubble.append(element("h2", "role", role === "user" ? "You" : "Assistant"));
  const body = element("div", "text", text);
  bubble.append(body);
  ui.conversation.append(bubble);
  bubble.scrollIntoView({ block: "end" });
  return { bubble, body };
}

function showEmpty() {
  const hint = currentKey()
    ? "Pick a model and send a message."
    : "Paste an API key above (the server prints one on its first start), then send a message.";
  ui.conversation.replaceChildren(element("p", "empty", hint));
}

function renderCalls(answer, calls) {
  let block = answer.bubble.querySelector(".calls");
  if (!block) {
    block = element("pre", "calls");
    answer.bubble.append(block);
  }
  block.textContent = calls.map((c) => `${c.function.name}(${c.function.arguments})`).join("\n");
}

function renderStats(answer, turn) {
  const parts = [];
  const usage = turn.usage;
  if (usage) {
    const cached = (usage.prompt_token_details || {}).cached_tokens || 0;
    parts.push(`prompt ${usage.prompt_tokens}`, `cached ${cached}`);
    parts.push(`completion ${usage.completion_tokens}`);
    const seconds = (turn.endedAt - (turn.firstAt || turn.sentAt)) / 1000;
    if (seconds > 0) parts.push(`${(usage.completion_tokens / seconds).toFixed(1)} tokens/s`);
  }
  if (turn.firstAt) parts.push(`first token ${((turn.firstAt - turn.sentAt) / 1000).toFixed(2)} s`);
  if (turn.sources) parts.push(`sources ${turn.sources}`);
  if (turn.stopped) parts.push("stopped");
  if (turn.error) parts.push("failed");
  const stats = element("p", "usage", parts.join(" · "));
  if (usage) {
    stats.dataset.promptTokens = usage.prompt_tokens;
    stats.dataset.completionTokens = usage.completion_tokens;
  }
  answer.bubble.append(stats);
}

// -- streaming an answer --------------------------------------------------------------------

function markFirstPaint() {
  // The callback runs before the frame that shows the token; the timeout after it is painted.
  requestAnimationFrame(() => setTimeout(() => performance.mark(FIRST_TOKEN_MARK), 0));
}

function applyDelta(turn, delta, answer) {
  if (delta.content) {
    if (!turn.firstAt) {
      turn.firstAt = performance.now();
      markFirstPaint();
    }
    turn.text += delta.content;
    answer.body.append(delta.content);
  }
  for (const fragment of delta.tool_calls || []) {
    const call = (turn.calls[fragment.index] ||= {
      id: "",
      type: "function",
      function: { name: "", arguments: "" },
    });
    if (fragment.id) call.id = fragment.id;
    if (fragment.function?.name) call.function.name = fragment.function.name;
    call.function.arguments += fragment.function?.arguments || "";
    renderCalls(answer, turn.calls.filter(Boolean));
  }
  const sources = delta.graph_data?.sources;
  if (sources) turn.sources = sources.length;
}

async function streamAnswer(body, answer, signal) {
  const turn = { text: "", calls: [], usage: null, sentAt: performance.now() };
  try {
    for await (const chunk of chatChunks(currentKey(), body, signal)) {
      if (chunk.usage) turn.usage = chunk.usage;
      const choice = (chunk.choices || [])[0];
      if (choice && choice.delta) applyDelta(turn, choice.delta, answer);
    }
  } catch (error) {
    if (error.name === "AbortError") turn.stopped = true;
    else turn.error = error instanceof ApiError ? error.message : `Request failed: ${error.message}`;
  }
  turn.endedAt = performance.now();
  return turn;
}

function setRunning(controller) {
  running = controller;
  ui.send.disabled = Boolean(controller);
  ui.stop.disabled = !controller;
  ui.conversation.setAttribute("aria-busy", controller ? "true" : "false");
}

function remember(userText, turn) {
  const calls = turn.calls.filter(Boolean);
  if (!turn.text && !calls.length) return false;
  history.push({ role: "user", content: userText });
  const reply = { role: "assistant", content: turn.text };
  if (calls.length) reply.tool_calls = calls;
  history.push(reply);
  return true;
}

async function send(event) {
  event.preventDefault();
  const text = ui.message.value.trim();
  if (running || !text) return;
  if (!currentKey()) return notify("Paste an API key first.");
  let body;
  try {
    body = { ...buildBody(text), stream: true, stream_options: { include_usage: true } };
  } catch (error) {
    return notify(error.message);
  }
  clearNotice();
  performance.clearMarks();
  performance.mark(SEND_MARK);
  const controller = new AbortController();
  setRunning(controller);
  ui.message.value = "";
  const question = addMessage("user", text);
  const answer = addMessage("assistant", "");
  const chat = chatNumber;
  const turn = await streamAnswer(body, answer, controller.signal);
  if (running === controller) setRunning(null);
  if (chat !== chatNumber) return;
  if (turn.error) {
    answer.bubble.classList.add("failed");
    notify(turn.error);
  }
  renderStats(answer, turn);
  if (!remember(text, turn)) forget(question, answer, text);
}

/** A turn that produced nothing is not part of the conversation: its text goes back. */
function forget(question, answer, text) {
  question.bubble.remove();
  answer.bubble.remove();
  if (!ui.message.value) ui.message.value = text;
  if (!ui.conversation.children.length) showEmpty();
}

function stop() {
  if (running) running.abort();
}

function newChat() {
  stop();
  chatNumber += 1;
  history.length = 0;
  clearNotice();
  showEmpty();
  ui.message.focus();
}

// -- "View code" ----------------------------------------------------------------------------

function showCode() {
  let python;
  let curl;
  try {
    const body = buildBody(ui.message.value.trim());
    python = pythonSnippet(body, location.origin);
    curl = curlSnippet(body, location.origin);
  } catch (error) {
    python = curl = error.message;
  }
  $("code-python").textContent = python;
  $("code-curl").textContent = curl;
  ui.code.showModal();
}

// -- start ----------------------------------------------------------------------------------

function start() {
  ui.key.value = localStorage.getItem(KEY_ITEM) || "";
  ui.key.addEventListener("input", onKeyInput);
  ui.model.addEventListener("change", () => localStorage.setItem(MODEL_ITEM, ui.model.value));
  ui.composer.addEventListener("submit", send);
  ui.message.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) ui.composer.requestSubmit();
  });
  ui.stop.addEventListener("click", stop);
  ui.newChat.addEventListener("click", newChat);
  ui.viewCode.addEventListener("click", showCode);
  $("close-code").addEventListener("click", () => ui.code.close());
  showEmpty();
  loadChoices();
}

start();
