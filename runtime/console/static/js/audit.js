// Audit log: every admin action, newest first, filtered by action.
import { Pager, api, busy, byId, format, h, showError, startPage } from "./core.js";

function details(value) {
  if (!value) return "";
  return Object.entries(value)
    .map(([name, detail]) => `${name}: ${typeof detail === "string" ? detail : JSON.stringify(detail)}`)
    .join(", ");
}

function auditRow(event) {
  return h(
    "tr",
    { dataset: { action: event.action } },
    h("td", { class: "when" }, format.when(event.at)),
    h("td", {}, h("code", {}, event.actor)),
    h("td", {}, h("span", { class: "tag" }, event.action)),
    h("td", {}, h("code", {}, event.target)),
    h("td", {}, event.source_ip ?? "–"),
    h("td", { class: "muted" }, details(event.details)),
  );
}

startPage(async () => {
  const action = byId("audit-action");
  const pager = new Pager({
    fetchPage: (cursor) => api("/audit", { query: { action: action.value, limit: 50, cursor } }),
    renderRows: (rows) => rows.map(auditRow),
    container: byId("audit").tBodies[0],
    more: byId("more-audit"),
    empty: byId("no-audit"),
  });
  const reload = () => pager.reload().then(() => showError("page-error", null));
  action.addEventListener("change", () => reload().catch((error) => showError("page-error", error)));
  byId("refresh").addEventListener("click", (event) => busy(event.currentTarget, reload).catch((error) => showError("page-error", error)));
  await pager.reload();
});
