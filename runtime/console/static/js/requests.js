// Requests: every request newest first, filtered; one request opens as a waterfall of its rounds and tool calls.
import { Pager, api, badge, busy, byId, format, h, openDialog, organisationPicker, prettyJson, showError, startPage } from "./core.js";

const form = byId("request-filters");
const dialog = byId("request-dialog");

// Requests come seconds apart: show the seconds.
const moment = (iso) =>
  new Date(iso).toLocaleString("en-GB", { day: "numeric", month: "short", hour: "2-digit", minute: "2-digit", second: "2-digit" });

function statusBadge(status) {
  const kind = status >= 500 ? "bad" : status >= 400 ? "warn" : "good";
  return badge(String(status), kind);
}

function query(cursor) {
  const data = new FormData(form);
  const hours = data.get("range");
  const wanted = { limit: 50, cursor };
  for (const name of ["organisation", "status", "route", "key", "model", "tool", "error"]) wanted[name] = String(data.get(name) || "").trim();
  if (hours) wanted.start = new Date(Date.now() - Number(hours) * 3600 * 1000).toISOString();
  return wanted;
}

function requestRow(entry) {
  const failed = entry.status >= 400 || Boolean(entry.error_code);
  return h(
    "tr",
    {
      class: `request${failed ? " failed" : ""}`,
      tabindex: "0",
      dataset: { id: entry.id, status: entry.status },
      onclick: () => openRequest(entry.id),
      onkeydown: (event) => {
        if (event.key === "Enter") openRequest(entry.id);
      },
    },
    h("td", { class: "when", title: entry.request_id }, moment(entry.at)),
    h("td", {}, statusBadge(entry.status)),
    h("td", {}, h("code", {}, entry.route)),
    h("td", {}, entry.organisation ?? h("span", { class: "muted" }, "–")),
    h("td", { class: "model-cell" }, entry.model ?? h("span", { class: "muted" }, "–")),
    h("td", { class: "num" }, format.duration(entry.latency_ms)),
    h("td", { class: "num" }, entry.ttfb_ms === null ? "–" : format.duration(entry.ttfb_ms)),
    h("td", { class: "num" }, format.integer(entry.prompt_tokens + entry.completion_tokens)),
    h("td", { class: "num" }, format.usd(entry.cost_usd)),
    h("td", {}, entry.tools.map((tool) => h("span", { class: "tag" }, tool))),
    h(
      "td",
      { class: "error-cell" },
      entry.error_code ? h("code", { class: "danger-text" }, entry.error_code) : null,
      entry.error_message ? h("span", { class: "sub", title: entry.error_message }, entry.error_message) : null,
    ),
  );
}

function fact(label, value, wide = false) {
  return h("div", { class: wide ? "wide-fact" : "" }, h("dt", {}, label), h("dd", {}, value ?? h("span", { class: "muted" }, "–")));
}

// One row of the waterfall: a label, and a bar placed by its start offset and sized by its duration.
function step({ label, sub, kind, start, duration, total, outcome }) {
  const span = h("div", { class: `span ${kind} ${outcome || ""}`.trim() });
  span.style.left = `${(100 * start) / total}%`;
  span.style.width = `${Math.max(0.3, (100 * duration) / total)}%`;
  return h(
    "div",
    { class: "step", role: "listitem", dataset: { kind, outcome: outcome || "" } },
    h("div", { class: "step-label", title: `${label}${sub ? ` ${sub}` : ""}` }, label, sub ? h("span", { class: "sub" }, ` ${sub}`) : null),
    h("div", { class: "track" }, span),
    h("div", { class: "step-time" }, format.duration(duration)),
  );
}

function waterfall(entry) {
  const steps = [...entry.trace.rounds, ...entry.trace.tool_calls].sort((a, b) => a.start_ms - b.start_ms);
  const total = Math.max(entry.latency_ms, ...steps.map((s) => s.start_ms + s.duration_ms), 1);
  const rows = [step({ label: "Request", sub: entry.route, kind: "request", start: 0, duration: entry.latency_ms, total })];
  if (entry.ttfb_ms !== null) {
    const mark = h("div", { class: "ttfb-mark", title: `first byte after ${format.duration(entry.ttfb_ms)}` });
    mark.style.left = `${(100 * entry.ttfb_ms) / total}%`;
    rows[0].querySelector(".track").append(mark);
  }
  for (const s of steps) {
    const label = s.kind === "round" ? `Round ${s.round} · model` : `${s.name}`;
    const sub = s.kind === "round" ? s.name : `(${s.plugin}, round ${s.round})${s.outcome !== "ok" ? ` ${s.outcome}` : ""}`;
    const row = step({ label, sub, kind: s.kind, start: s.start_ms, duration: s.duration_ms, total, outcome: s.outcome === "ok" ? "" : s.outcome });
    if (s.error) row.title = s.error;
    rows.push(row);
  }
  byId("waterfall").replaceChildren(...rows);
  byId("no-timeline").hidden = steps.length > 0;
}

async function openRequest(id) {
  showError("request-error", null);
  const entry = await api(`/requests/${encodeURIComponent(id)}`).catch((error) => {
    showError("page-error", error);
    return null;
  });
  if (!entry) return;
  byId("request-title").firstChild.textContent = `Request ${entry.request_id} `;
  const status = statusBadge(entry.status);
  byId("request-status").className = status.className;
  byId("request-status").textContent = status.textContent;
  if (entry.error_code || entry.error_message) {
    byId("request-error").textContent = `${entry.error_code ?? "error"}: ${entry.error_message ?? "(no message)"}`;
    byId("request-error").hidden = false;
  }
  const tokens = `${format.integer(entry.prompt_tokens)} in · ${format.integer(entry.completion_tokens)} out`;
  const served = entry.served_model && entry.served_model !== entry.model ? ` → ${entry.served_model}` : "";
  byId("request-facts").replaceChildren(
    fact("When", moment(entry.at)),
    fact("Route", h("code", {}, `${entry.method} ${entry.route}`)),
    fact("Organisation", entry.organisation),
    fact("Key", entry.key_id ? h("code", {}, entry.key_id) : null),
    fact("Model", entry.model ? `${entry.model}${served}` : null),
    fact("Provider", entry.provider),
    fact("Endpoint", entry.endpoint),
    fact("Source", entry.source),
    fact("Latency", format.duration(entry.latency_ms)),
    fact("First byte", entry.ttfb_ms === null ? null : format.duration(entry.ttfb_ms)),
    fact("Tokens", tokens),
    fact("Cost", format.usd(entry.cost_usd)),
  );
  waterfall(entry);
  const bodies = entry.bodies;
  byId("request-bodies").hidden = !bodies;
  byId("no-bodies").hidden = Boolean(bodies);
  if (bodies) {
    byId("request-body").textContent = prettyJson(bodies.request ?? "");
    byId("response-body").textContent = prettyJson(bodies.response ?? "");
  }
  history.replaceState(null, "", `#request-${entry.id}`);
  openDialog(dialog);
}

startPage(async () => {
  const pager = new Pager({
    fetchPage: (cursor) => api("/requests", { query: query(cursor) }),
    renderRows: (rows) => rows.map(requestRow),
    container: byId("requests").tBodies[0],
    more: byId("more-requests"),
    empty: byId("no-requests"),
  });
  const reload = () => pager.reload().then(() => showError("page-error", null));
  const reloadShowingErrors = () => reload().catch((error) => showError("page-error", error));
  await organisationPicker(byId("filter-organisation"));
  const parameters = new URLSearchParams(location.search);
  for (const name of ["status", "route", "key", "model", "tool", "error"]) {
    if (parameters.has(name)) form.elements[name].value = parameters.get(name);
  }
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    reloadShowingErrors();
  });
  // Lists and ranges apply at once; typed filters on Enter or "Apply filters".
  for (const select of form.querySelectorAll("select")) select.addEventListener("change", reloadShowingErrors);
  form.addEventListener("reset", () => setTimeout(reloadShowingErrors));
  byId("refresh").addEventListener("click", (event) => busy(event.currentTarget, reload).catch((error) => showError("page-error", error)));
  dialog.addEventListener("close", () => history.replaceState(null, "", location.pathname + location.search));
  await pager.reload();
  const linked = /^#request-(\d+)$/.exec(location.hash);
  if (linked) await openRequest(linked[1]);
});
