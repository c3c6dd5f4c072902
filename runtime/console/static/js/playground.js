// Playground: chat with an endpoint or a model; the answer streams in and every tool call shows
// as a card the moment the model makes it, then fills in with its result and duration.
//
// POST /admin/v1/playground answers server-sent events; EventSource cannot POST, so the
// response body is read with a stream reader and split into events here.
import { ApiError, api, badge, byId, format, h, organisations, parseJsonObject, prettyJson, request, showError, startPage } from "./core.js";

const transcript = byId("transcript");
const emptyHint = byId("transcript-empty");
const composer = byId("composer");
const message = byId("message");
const state = {
  history: [], // the conversation so far: {role, content}
  sessionId: null, // an endpoint with sessions keeps the history itself
  endpoints: [],
  running: null, // the AbortController of the answer being streamed
};

const targetKind = () => (byId("target-endpoint").checked ? "endpoint" : "model");
const chosenEndpoint = () => state.endpoints.find((endpoint) => endpoint.slug === byId("playground-endpoint").value) ?? null;

// -- settings ----------------------------------------------------------------------------------

function fact(term, detail) {
  return [h("dt", {}, term), h("dd", {}, detail)];
}

function showFacts(extra = []) {
  const facts = [];
  if (targetKind() === "endpoint") {
    const endpoint = chosenEndpoint();
    if (endpoint) {
      facts.push(fact("Model", h("code", {}, endpoint.model)));
      facts.push(fact("Plugins", endpoint.plugins === null ? "all of the organisation's" : endpoint.plugins.join(", ") || "none"));
      facts.push(fact("Sessions", endpoint.sessions.enabled ? "kept by the gateway" : "off: the whole history is sent"));
    }
  } else {
    facts.push(fact("Plugins", "all of the organisation's"));
  }
  if (state.sessionId) facts.push(fact("Session", h("code", {}, state.sessionId)));
  byId("playground-facts").replaceChildren(...facts.flat(), ...extra.flat());
}

function showTarget() {
  const endpoint = targetKind() === "endpoint";
  byId("playground-endpoint-field").hidden = !endpoint;
  byId("playground-model-field").hidden = endpoint;
  const chosen = chosenEndpoint();
  byId("playground-variables-field").hidden = !(endpoint && chosen?.system_prompt?.includes("{{"));
  byId("playground-endpoint-hint").textContent = endpoint && chosen ? chosen.description || `POST /api/${chosen.organisation}/${chosen.slug}` : "";
  showFacts();
}

async function showOrganisation(wanted = {}) {
  const organisationId = byId("playground-organisation").value;
  const organisation = (await organisations()).find((one) => one.id === organisationId);
  const models = organisation?.models ?? [];
  byId("playground-model").replaceChildren(...models.map((model) => h("option", { value: model }, model)));
  if (wanted.model && models.includes(wanted.model)) byId("playground-model").value = wanted.model;
  state.endpoints = (await api("/endpoints", { query: { organisation: organisationId } })).data;
  const options = state.endpoints.map((endpoint) =>
    h("option", { value: endpoint.slug, disabled: !endpoint.active }, endpoint.slug + (endpoint.active ? "" : " (inactive)")),
  );
  byId("playground-endpoint").replaceChildren(...(options.length ? options : [h("option", { value: "" }, "No endpoints in this organisation")]));
  const firstActive = state.endpoints.find((endpoint) => endpoint.active);
  byId("playground-endpoint").value = state.endpoints.some((endpoint) => endpoint.slug === wanted.endpoint) ? wanted.endpoint : firstActive?.slug ?? "";
  if (wanted.endpoint) byId("target-endpoint").checked = true;
  showTarget();
}

function newChat() {
  state.running?.abort();
  state.history = [];
  state.sessionId = null;
  transcript.replaceChildren(emptyHint);
  emptyHint.hidden = false;
  showFacts();
  message.focus();
}
// -- the conversation --------------------------------------------------------------------------

function scrollDown() {
  transcript.scrollTop = transcript.scrollHeight;
}

function userTurn(text) {
  emptyHint.hidden = true;
  transcript.append(h("div", { class: "turn user" }, h("div", { class: "bubble" }, text)));
}

// One assistant turn: text and tool cards in the order they happened.
class AssistantTurn {
  constructor() {
    this.element = h("div", { class: "turn assistant", dataset: { state: "streaming" }, "aria-busy": "true" });
    this.cards = new Map();
    this.text = null; // the text bubble being written, until a tool call comes after it
    this.started = performance.now();
    transcript.append(this.element);
  }

  appendText(delta) {
    if (!this.text) {
      this.text = h("div", { class: "bubble answer" });
      this.element.append(this.text);
    }
    this.text.textContent += delta;
    scrollDown();
  }

  toolCall(call) {
    this.text = null;
    const title = call.plugin && call.tool && !call.builtin ? `${call.plugin} · ${call.tool}` : call.name;
    const status = h("span", { class: "tool-card-status" }, h("span", { class: "spinner", "aria-hidden": "true" }), " running");
    const card = h(
      "div",
      { class: "tool-card", dataset: { state: "running", callId: call.call_id, tool: call.name } },
      h("div", { class: "tool-card-head" }, h("span", { class: "tool-card-name" }, title), badge(`round ${call.round}`), status),
    );
    const outcome = h("div", {}, h("div", { class: "label" }, "Result"), h("p", { class: "muted" }, "running…"));
    card.append(h("div", { class: "tool-card-body" }, h("div", {}, h("div", { class: "label" }, "Arguments"), h("pre", { class: "code tool-arguments" }, prettyJson(call.arguments || "{}"))), outcome));
    this.element.append(card);
    this.cards.set(call.call_id, { card, status, outcome });
    scrollDown();
  }

  toolProgress(progress) {
    const entry = this.cards.get(progress.call_id);
    if (!entry) return;
    entry.progress ??= entry.card.appendChild(h("progress", { max: 1 }));
    if (progress.total) {
      entry.progress.max = progress.total;
      entry.progress.value = progress.progress;
    } else entry.progress.removeAttribute("value");
    if (progress.message) entry.progress.title = progress.message;
  }

  toolResult(result) {
    const entry = this.cards.get(result.call_id);
    if (!entry) return;
    const { card, status, outcome } = entry;
    card.dataset.state = result.ok ? "ok" : "error";
    status.replaceChildren(badge(result.ok ? "ok" : "error", result.ok ? "good" : "bad"), " ", h("span", { class: "muted tool-duration" }, format.duration(result.duration_ms)));
    entry.progress?.remove();
    outcome.replaceChildren(h("div", { class: "label" }, result.ok ? "Result" : "Error"), h("pre", { class: "code tool-output" }, prettyJson(result.content || result.error || "")));
    scrollDown();
  }

  done(outcome) {
    // The final answer is the text after the last tool card; show the server's version of it
    // (an output guardrail may have redacted what streamed, a non-streaming endpoint streams nothing).
    if (!this.text && outcome.content) this.appendText(outcome.content);
    else if (this.text && outcome.content && this.text.textContent !== outcome.content) this.text.textContent = outcome.content;
    const usage = outcome.usage || {};
    const rounds = outcome.trace?.rounds;
    const meta = [
      `${format.integer(usage.total_tokens ?? 0)} tokens (${format.integer(usage.prompt_tokens ?? 0)} in, ${format.integer(usage.completion_tokens ?? 0)} out)`,
      rounds !== undefined ? `${rounds} ${rounds === 1 ? "round" : "rounds"}` : null,
      `finish: ${outcome.finish_reason}`,
      format.duration(performance.now() - this.started),
    ].filter(Boolean);
    this.element.append(h("div", { class: "turn-meta" }, meta.join(" · ")));
    this.finish("done");
  }

  fail(text) {
    this.element.append(h("div", { class: "alert", role: "alert" }, text));
    this.finish("error");
  }

  finish(final) {
    for (const { card, status, outcome } of this.cards.values()) {
      if (card.dataset.state === "running") {
        card.dataset.state = "error";
        status.replaceChildren(badge("no result", "bad"));
        outcome.replaceChildren();
      }
    }
    this.element.dataset.state = final;
    this.element.removeAttribute("aria-busy");
    scrollDown();
  }
}

// Splits a server-sent event stream into {event, data} objects.
async function* serverSentEvents(response, signal) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  signal.addEventListener("abort", () => reader.cancel().catch(() => {}));
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value.replace(/\r\n?/g, "\n");
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let event = "message";
      const data = [];
      for (const line of block.split("\n")) {
        if (line.startsWith(":")) continue; // keep-alive comments while tools run
        if (line.startsWith("event:")) event = line.slice(6).trim();
        else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
      }
      if (data.length) yield { event, data: JSON.parse(data.join("\n")) };
    }
  }
}

function requestBody(text) {
  const organisation = byId("playground-organisation").value;
  const turn = { role: "user", content: text };
  if (targetKind() === "model") {
    return { organisation, model: byId("playground-model").value, messages: [...state.history, turn] };
  }
  const endpoint = chosenEndpoint();
  if (!endpoint) throw new Error("Pick an endpoint (or talk to a model): this organisation has no active endpoint.");
  const body = { organisation, endpoint: endpoint.slug, messages: state.sessionId ? [turn] : [...state.history, turn] };
  if (state.sessionId) body.session_id = state.sessionId;
  if (!byId("playground-variables-field").hidden) {
    const variables = parseJsonObject(byId("playground-variables").value, "variables", "The variables");
    if (variables) body.variables = variables;
  }
  return body;
}

function setRunning(controller) {
  state.running = controller;
  byId("send").disabled = Boolean(controller);
  byId("stop").hidden = !controller;
  for (const control of byId("playground-settings").querySelectorAll("select, input, textarea")) control.disabled = Boolean(controller);
}

async function send(text) {
  let body;
  try {
    body = requestBody(text);
  } catch (error) {
    showError("page-error", error);
    return;
  }
  showError("page-error", null);
  userTurn(text);
  message.value = "";
  const turn = new AssistantTurn();
  const controller = new AbortController();
  setRunning(controller);
  let finished = false;
  try {
    const response = await request("/playground", { method: "POST", body, signal: controller.signal });
    for await (const { event, data } of serverSentEvents(response, controller.signal)) {
      if (event === "text") turn.appendText(data.delta);
      else if (event === "tool_call") turn.toolCall(data);
      else if (event === "tool_progress") turn.toolProgress(data);
      else if (event === "tool_result") turn.toolResult(data);
      else if (event === "done") {
        turn.done(data);
        finished = true;
        state.history.push({ role: "user", content: text }, { role: "assistant", content: data.content });
        if (data.session_id) state.sessionId = data.session_id;
        showFacts();
      } else if (event === "error") {
        turn.fail(`${data.message}${data.code ? ` (${data.code})` : ""}`);
        finished = true;
      }
    }
    if (!finished) turn.fail("The answer stopped before it was complete.");
  } catch (error) {
    if (controller.signal.aborted) turn.fail("Stopped.");
    else turn.fail(error instanceof ApiError ? `${error.message}${error.code ? ` (${error.code})` : ""}` : error.message);
  } finally {
    setRunning(null);
    message.focus();
  }
}

startPage(async () => {
  const select = byId("playground-organisation");
  select.addEventListener("change", () => showOrganisation().then(newChat).catch((error) => showError("page-error", error)));
  for (const radio of document.querySelectorAll('input[name="target"]')) radio.addEventListener("change", () => (showTarget(), newChat()));
  byId("playground-endpoint").addEventListener("change", () => (showTarget(), newChat()));
  byId("playground-model").addEventListener("change", newChat);
  byId("new-chat").addEventListener("click", newChat);
  byId("stop").addEventListener("click", () => state.running?.abort());
  for (const suggestion of document.querySelectorAll(".suggestion")) {
    suggestion.addEventListener("click", () => {
      message.value = suggestion.textContent;
      composer.requestSubmit();
    });
  }
  composer.addEventListener("submit", (event) => {
    event.preventDefault();
    const text = message.value.trim();
    if (text && !state.running) send(text);
  });
  // Enter sends; Shift+Enter is a new line; an IME composition is left alone.
  message.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      composer.requestSubmit();
    }
  });

  const parameters = new URLSearchParams(location.search);
  const list = await organisations();
  select.replaceChildren(...list.map((organisation) => h("option", { value: organisation.id }, organisation.id)));
  const wantedOrganisation = parameters.get("organisation") ?? sessionStorage.getItem("plugway.console.organisation");
  select.value = list.some((one) => one.id === wantedOrganisation) ? wantedOrganisation : list[0]?.id ?? "";
  await showOrganisation({ endpoint: parameters.get("endpoint"), model: parameters.get("model") });
  message.focus();
});
