// Plugins: the gateway's health, each organisation's plugins with their tools and schemas; try a tool.
import {
  api,
  badge,
  busy,
  byId,
  clearFormError,
  confirmAction,
  format,
  h,
  openDialog,
  organisationPicker,
  parseJsonObject,
  prettyJson,
  showError,
  showFormError,
  startPage,
  toast,
} from "./core.js";
import { schemaForm } from "./schema-form.js";

const form = byId("tool-form");
const dialog = byId("tool-dialog");
let current = null; // {organisation, plugin, tool, fields}
let jsonMode = false;

function healthBadge(health) {
  if (!health) return badge("unknown");
  if (health.healthy) return badge(health.state || "healthy", "good");
  return badge(health.state || "unhealthy", health.state === "starting" ? "warn" : "bad");
}

async function loadHealth() {
  const health = await api("/health");
  const status = byId("health-status");
  status.textContent = health.status;
  status.className = `badge ${health.status === "ready" ? "good" : "bad"}`;
  const items = [];
  for (const [name, check] of Object.entries(health.checks)) {
    if (name === "mcp") {
      for (const [plugin, entry] of Object.entries(check)) {
        const why = entry.healthy ? "" : `: ${entry.error || "failing"}`;
        items.push(h("li", { title: entry.error || "" }, h("span", { class: `dot ${entry.healthy ? "good" : "bad"}` }), `MCP ${plugin}: ${entry.state}${why}`));
      }
    } else if (name === "plugin_failures") {
      for (const [plugin, error] of Object.entries(check)) items.push(h("li", { title: error }, h("span", { class: "dot bad" }), `plugin ${plugin} failed to load`));
    } else {
      items.push(h("li", { title: check.error || "" }, h("span", { class: `dot ${check.ok ? "good" : "bad"}` }), `${name}: ${check.ok ? "ok" : check.error || "failing"}`));
    }
  }
  byId("health-checks").replaceChildren(...items);
}

// An MCP server that failed and came back still tells why it failed, and when.
function lastFailure(health) {
  if (!health?.last_error || health.last_error === health.error) return null;
  return h("p", { class: "last-failure muted" }, `Last failure ${format.when(health.last_error_at)}: ${health.last_error}`);
}

function toolItem(plugin, tool) {
  return h(
    "li",
    { class: "tool", dataset: { tool: tool.name } },
    h("div", {}, h("span", { class: "tool-name" }, tool.name), tool.description ? h("p", { class: "tool-description" }, tool.description) : null),
    h("button", { type: "button", class: "secondary small", onclick: () => openTool(plugin, tool), "aria-label": `Try ${tool.name}` }, "Try"),
    h("details", {}, h("summary", {}, "JSON schema"), h("pre", { class: "code" }, JSON.stringify(tool.parameters, null, 2))),
  );
}

// An MCP server that needs OAuth: who authorized it, and the button that does it (never a token).
function authorizationRow(plugin) {
  const auth = plugin.authorization;
  if (!auth) return null;
  const path = `/plugins/${encodeURIComponent(plugin.organisation)}/${encodeURIComponent(plugin.id)}/authorization`;
  if (auth.type === "client_credentials") return h("p", { class: "authorization muted" }, "OAuth client credentials: plugway fetches its token itself.");
  if (auth.per_user) {
    const users = auth.users === 1 ? "1 end user has" : `${auth.users} end users have`;
    return h(
      "div",
      { class: "authorization" },
      h("span", {}, `OAuth per end user: ${users} authorized. A user who has not gets a link to do so.`),
      auth.users
        ? h("button", { type: "button", class: "secondary small", onclick: () => forget(plugin, path, { all_users: true }, "every end user's authorization") }, "Forget all")
        : null,
    );
  }
  const grant = auth.organisation_authorization;
  return h(
    "div",
    { class: "authorization" },
    auth.authorized ? badge("authorized", "good") : badge("not authorized", "bad"),
    grant ? h("span", { class: "muted" }, `by ${grant.created_by || "someone"}, ${format.when(grant.created_at)}`) : null,
    h(
      "button",
      {
        type: "button",
        class: auth.authorized ? "secondary small" : "primary small",
        dataset: { action: "authorize" },
        onclick: (event) => busy(event.currentTarget, () => authorize(path)).catch((error) => showError("page-error", error)),
      },
      auth.authorized ? "Authorize again" : "Authorize",
    ),
    auth.authorized ? h("button", { type: "button", class: "secondary small", onclick: () => forget(plugin, path, {}, "the organisation's authorization") }, "Forget") : null,
  );
}

async function authorize(path) {
  const started = await api(path, { method: "POST", body: { return_to: "/console/plugins" } });
  // The authorization server's own page: the admin signs in there and comes back here.
  location.assign(started.authorize_url);
}

function forget(plugin, path, query, what) {
  confirmAction({
    title: `Forget ${what}?`,
    message: `${plugin.id} (${plugin.organisation}) stops working for them until authorized again. The stored tokens are deleted.`,
    confirmLabel: "Forget",
    action: async () => {
      await api(path, { method: "DELETE", query });
      toast(`${plugin.id}: authorization forgotten.`);
      await loadPlugins();
    },
  });
}

function pluginCard(plugin, showOrganisation) {
  return h(
    "section",
    { class: "card", dataset: { plugin: plugin.id, organisation: plugin.organisation } },
    h(
      "div",
      { class: "plugin-head" },
      h("h2", {}, plugin.id),
      badge(plugin.kind === "mcp" ? "MCP server" : "Python plugin", "accent"),
      plugin.origin ? h("span", { class: "muted" }, plugin.origin) : null,
      showOrganisation ? h("span", { class: "muted" }, `· ${plugin.organisation}`) : null,
      healthBadge(plugin.health),
    ),
    authorizationRow(plugin),
    plugin.health?.error ? h("p", { class: "plugin-error" }, plugin.health.error) : null,
    lastFailure(plugin.health),
    plugin.tools.length
      ? h("ul", { class: "tools" }, plugin.tools.map((tool) => toolItem(plugin, tool)))
      : h("p", { class: "muted" }, plugin.health?.healthy ? "This plugin offers no tools." : "No tools while it is unavailable."),
  );
}

async function loadPlugins() {
  const organisation = byId("organisation").value;
  const listed = await api("/plugins", { query: { organisation } });
  byId("plugins").replaceChildren(...listed.data.map((plugin) => pluginCard(plugin, !organisation)));
  byId("no-plugins").hidden = listed.data.length > 0;
}

async function load() {
  await Promise.all([loadHealth(), loadPlugins()]);
  showError("page-error", null);
}

// -- trying a tool -----------------------------------------------------------------------------

function setMode(json) {
  // Carry what was typed across: the form's values into the JSON, the JSON into the form.
  if (json && !jsonMode) byId("tool-arguments").value = JSON.stringify(current.fields.read(), null, 2);
  if (!json && jsonMode) current.fields.write(parseJsonObject(byId("tool-arguments").value || "{}", "arguments", "The arguments") ?? {});
  jsonMode = json;
  byId("tool-mode-form").setAttribute("aria-selected", String(!json));
  byId("tool-mode-json").setAttribute("aria-selected", String(json));
  byId("tool-fields").hidden = json;
  byId("tool-json-field").hidden = !json;
}

function switchMode(json) {
  try {
    clearFormError(form, "tool-form-error");
    setMode(json);
    (json ? byId("tool-arguments") : form.querySelector("#tool-fields [name]"))?.focus();
  } catch (error) {
    showFormError(form, "tool-form-error", error);
  }
}

function openTool(plugin, tool) {
  form.reset();
  clearFormError(form, "tool-form-error");
  byId("tool-dialog-title").textContent = `${plugin.organisation} · ${tool.name}`;
  byId("tool-description").textContent = tool.description || "";
  current = { organisation: plugin.organisation, plugin: plugin.id, tool, fields: schemaForm(byId("tool-fields"), tool.parameters) };
  jsonMode = false;
  setMode(false);
  byId("tool-arguments").value = "{}";
  byId("tool-result").hidden = true;
  openDialog(dialog, form.querySelector("#tool-fields [name]") || byId("tool-run"));
}

async function run() {
  const argumentsObject = jsonMode ? parseJsonObject(byId("tool-arguments").value || "{}", "arguments", "The arguments") ?? {} : current.fields.read();
  const { organisation, plugin, tool } = current;
  const path = `/plugins/${encodeURIComponent(organisation)}/${encodeURIComponent(plugin)}/tools/${encodeURIComponent(tool.tool)}/call`;
  const outcome = await api(path, { method: "POST", body: { arguments: argumentsObject } });
  const status = byId("tool-result-status");
  status.textContent = outcome.ok ? "ok" : "error";
  status.className = `badge ${outcome.ok ? "good" : "bad"}`;
  byId("tool-result-duration").textContent = format.duration(outcome.duration_ms);
  byId("tool-result-content").textContent = prettyJson(outcome.content ?? outcome.error ?? "");
  byId("tool-result").hidden = false;
}

startPage(async () => {
  const reload = () => loadPlugins().catch((error) => showError("page-error", error));
  await organisationPicker(byId("organisation"), { onChange: reload });
  byId("refresh").addEventListener("click", (event) => busy(event.currentTarget, load).catch((error) => showError("page-error", error)));
  byId("tool-mode-form").addEventListener("click", () => switchMode(false));
  byId("tool-mode-json").addEventListener("click", () => switchMode(true));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    clearFormError(form, "tool-form-error");
    busy(byId("tool-run"), run).catch((error) => showFormError(form, "tool-form-error", error));
  });
  await load();
  const authorized = new URLSearchParams(location.search).get("authorized");
  if (authorized) {
    toast(`${authorized} is authorized: its tools are offered from now on.`);
    history.replaceState(null, "", location.pathname);
  }
});
