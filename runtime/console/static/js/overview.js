// Overview: the period's totals, per-day charts, the busiest keys and models, the organisations.
import { barChart, rateChart } from "./charts.js";
import { api, badge, busy, byId, format, h, organisationPicker, request, showError, startPage, tags } from "./core.js";

const DAY_MS = 86_400_000;
const REFRESH_MS = 30_000;
const BUSIEST = 6;

const isoDay = (date) => date.toISOString().slice(0, 10);

// Usage is grouped by UTC day, so the period is counted in UTC days too.
function period() {
  const now = new Date();
  const today = Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), now.getUTCDate());
  const chosen = byId("period").value;
  const start = chosen === "month" ? Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), 1) : today - (Number(chosen) - 1) * DAY_MS;
  const end = today + DAY_MS;
  const days = [];
  for (let day = start; day < end; day += DAY_MS) days.push(isoDay(new Date(day)));
  return { start: isoDay(new Date(start)), end: isoDay(new Date(end)), days };
}

// A thin bar under the row, as long as its share of the busiest row (set through CSSOM: no inline styles).
function shareBar(value, highest) {
  const bar = h("span", { class: "bar", "aria-hidden": "true" });
  bar.style.width = `${Math.round((100 * value) / (highest || 1))}%`;
  return bar;
}

function busiestRows(rows, label) {
  const top = [...rows].sort((a, b) => b.requests - a.requests || b.total_tokens - a.total_tokens).slice(0, BUSIEST);
  const highest = top[0]?.requests || 0;
  if (!top.length) return [h("tr", {}, h("td", { colspan: 4, class: "muted" }, "Nothing in this period."))];
  return top.map((row) => {
    return h(
      "tr",
      {},
      h("td", { class: "bar-cell" }, label(row), shareBar(row.requests, highest)),
      h("td", { class: "num" }, format.integer(row.requests)),
      h("td", { class: "num" }, format.compact(row.total_tokens)),
      h("td", { class: "num" }, format.usd(row.cost_usd)),
    );
  });
}

function keyLabel(keysById) {
  return (row) => {
    if (row.group === null) return h("span", {}, h("span", { class: "muted" }, "No key"), h("span", { class: "sub" }, "console, WhatsApp, tool tries"));
    const key = keysById.get(row.group);
    if (!key) return h("code", {}, row.group);
    return h(
      "span",
      {},
      key.name || h("span", { class: "muted" }, "unnamed"),
      key.revoked_at ? [" ", badge("revoked", "bad")] : null,
      h("span", { class: "sub" }, `${key.organisation} · ${key.prefix}…`),
    );
  };
}

function pluginHealth(plugin) {
  const healthy = plugin.health?.healthy;
  return h(
    "span",
    { class: "tag", title: plugin.health?.error || plugin.health?.state || "" },
    h("span", { class: `dot ${healthy ? "good" : healthy === false ? "bad" : ""}` }),
    plugin.id,
  );
}

function organisationRows(organisations) {
  return organisations.map((organisation) => {
    const budget = organisation.monthly_budget_usd;
    const spent = organisation.spend_this_period_usd;
    return h(
      "tr",
      {},
      h("td", {}, h("strong", {}, organisation.id)),
      h("td", {}, tags(organisation.models)),
      h("td", {}, organisation.plugins.length ? organisation.plugins.map(pluginHealth) : h("span", { class: "muted" }, "none")),
      h("td", {}, organisation.endpoints.length ? organisation.endpoints.map((endpoint) => h("span", { class: "tag" }, endpoint.slug)) : h("span", { class: "muted" }, "none")),
      h("td", { class: "num" }, format.usd(spent), budget ? h("span", { class: "sub" }, format.percent(spent, budget) + " of budget") : null),
      h("td", { class: "num" }, budget ? format.usd(budget) : h("span", { class: "muted" }, "none")),
    );
  });
}

// The key picker lists the organisation's keys (revoked ones too: their usage stays); a choice
// no longer listed falls back to all keys.
function fillKeyFilter(keys) {
  const picker = byId("key-filter");
  const chosen = picker.value;
  const options = keys.map((key) => h("option", { value: key.id }, `${key.name || "unnamed"} (${key.prefix}…)${key.revoked_at ? " · revoked" : ""}`));
  picker.replaceChildren(h("option", { value: "" }, "All keys"), ...options);
  picker.value = keys.some((key) => key.id === chosen) ? chosen : "";
}

async function load() {
  const { start, end, days } = period();
  const organisation = byId("organisation").value;
  const key = byId("key-filter").value;
  const query = { organisation, start, end };
  // The key filter narrows the totals, the charts and the models; the busiest keys stay a ranking of all.
  const narrowed = key ? { ...query, key } : query;
  const [byDay, byKey, byModel, organisations, keys] = await Promise.all([
    api("/usage", { query: { ...narrowed, group_by: "day" } }),
    api("/usage", { query: { ...query, group_by: "key" } }),
    api("/usage", { query: { ...narrowed, group_by: "model" } }),
    api("/organisations"),
    api("/keys", { query: { organisation, include_revoked: true, limit: 200 } }),
  ]);
  showError("page-error", null);
  fillKeyFilter(keys.data);
  const totals = byDay.totals;
  byId("total-requests").textContent = format.integer(totals.requests);
  byId("total-requests-sub").textContent = `${days.length} days from ${start}`;
  byId("total-tokens").textContent = format.compact(totals.total_tokens);
  byId("total-tokens-sub").textContent = `${format.compact(totals.prompt_tokens)} prompt · ${format.compact(totals.completion_tokens)} completion`;
  byId("total-cost").textContent = format.usd(totals.cost_usd);
  byId("total-cost-sub").textContent = totals.requests ? `${format.usd(totals.cost_usd / totals.requests)} a request` : "\u00a0";
  byId("total-error-rate").textContent = format.percent(totals.errors, totals.requests);
  byId("total-errors-sub").textContent = `${format.integer(totals.errors)} failed`;
  byId("no-usage").hidden = totals.requests > 0;

  const perDay = new Map(byDay.data.map((row) => [row.group, row]));
  const series = (field) => days.map((day) => perDay.get(day)?.[field] || 0);
  barChart(byId("chart-requests"), { labels: days, series: [{ name: "requests", values: series("requests"), className: "bar-a" }] });
  barChart(byId("chart-tokens"), {
    labels: days,
    series: [
      { name: "prompt", values: series("prompt_tokens"), className: "bar-a" },
      { name: "completion", values: series("completion_tokens"), className: "bar-b" },
    ],
    unit: " tokens",
  });
  barChart(byId("chart-cost"), { labels: days, series: [{ name: "", values: series("cost_usd"), className: "bar-a" }], formatValue: format.usd });
  rateChart(byId("chart-errors"), {
    labels: days,
    values: days.map((day) => {
      const row = perDay.get(day);
      return row?.requests ? row.errors / row.requests : null;
    }),
    name: "errors",
  });

  const keysById = new Map(keys.data.map((key) => [key.id, key]));
  byId("busiest-keys").tBodies[0].replaceChildren(...busiestRows(byKey.data, keyLabel(keysById)));
  byId("busiest-models").tBodies[0].replaceChildren(...busiestRows(byModel.data, (row) => h("code", {}, row.group ?? "–")));
  const shown = organisation ? organisations.data.filter((one) => one.id === organisation) : organisations.data;
  byId("organisations").tBodies[0].replaceChildren(...organisationRows(shown));
}

async function exportCsv() {
  const { start, end } = period();
  const key = byId("key-filter").value;
  const query = { organisation: byId("organisation").value, start, end, group_by: "day", format: "csv", ...(key ? { key } : {}) };
  const response = await request("/usage", { query });
  const address = URL.createObjectURL(await response.blob());
  const link = h("a", { href: address, download: `plugway-usage-${start}-${end}.csv` });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(address), 10_000);
}

startPage(async () => {
  const reload = () => load().catch((error) => showError("page-error", error));
  await organisationPicker(byId("organisation"), {
    onChange: () => {
      byId("key-filter").value = "";  // another organisation's keys
      return reload();
    },
  });
  byId("key-filter").addEventListener("change", reload);
  byId("period").addEventListener("change", reload);
  byId("refresh").addEventListener("click", (event) => busy(event.currentTarget, load).catch((error) => showError("page-error", error)));
  byId("export-csv").addEventListener("click", (event) => busy(event.currentTarget, exportCsv).catch((error) => showError("page-error", error)));
  await load();
  // New requests show up without a reload while the tab is in view.
  setInterval(() => {
    if (document.visibilityState === "visible") load().catch(() => {});
  }, REFRESH_MS);
});
