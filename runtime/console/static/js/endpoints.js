// Endpoints: YAML ones read-only, stored ones created, edited and deleted here; each tried in the playground.
import {
  api,
  badge,
  busy,
  byId,
  clearFormError,
  confirmAction,
  h,
  openDialog,
  organisationPicker,
  organisations,
  parseJsonObject,
  showError,
  showFormError,
  startPage,
  tags,
  toast,
} from "./core.js";

const form = byId("endpoint-form");
const dialog = byId("endpoint-dialog");
let editing = null; // the endpoint shown in the dialog, or null when creating

const playgroundAddress = (endpoint) =>
  `/console/playground?${new URLSearchParams({ organisation: endpoint.organisation, endpoint: endpoint.slug })}`;

function endpointRow(endpoint) {
  const stored = endpoint.source === "api";
  return h(
    "tr",
    { dataset: { slug: endpoint.slug, organisation: endpoint.organisation } },
    h(
      "td",
      {},
      h("code", {}, endpoint.slug),
      endpoint.description ? h("span", { class: "sub" }, endpoint.description) : null,
      h("span", { class: "sub" }, `POST /api/${endpoint.organisation}/${endpoint.slug}`),
    ),
    h("td", {}, endpoint.organisation),
    h("td", {}, h("code", {}, endpoint.model)),
    h("td", {}, tags(endpoint.plugins)),
    h("td", {}, endpoint.sessions.enabled ? `on, ${endpoint.sessions.max_messages} messages` : h("span", { class: "muted" }, "off")),
    h("td", {}, endpoint.active ? badge("active", "good") : badge("inactive")),
    h("td", {}, stored ? badge("stored", "accent") : badge("YAML", ""), stored ? null : h("span", { class: "sub" }, "read-only")),
    h(
      "td",
      { class: "actions" },
      h("button", { type: "button", class: "secondary small", onclick: () => openEndpointDialog(endpoint) }, stored ? "Edit" : "View"),
      h("a", { class: "button secondary small", href: playgroundAddress(endpoint) }, "Try"),
      stored ? h("button", { type: "button", class: "secondary small danger-text", onclick: () => remove(endpoint) }, "Delete") : null,
    ),
  );
}

async function load() {
  const listed = await api("/endpoints", { query: { organisation: byId("organisation").value } });
  byId("endpoints").tBodies[0].replaceChildren(...listed.data.map(endpointRow));
  byId("no-endpoints").hidden = listed.data.length > 0;
}

// -- the dialog --------------------------------------------------------------------------------

function choices(container, name, values, chosen, onchange) {
  container.replaceChildren(
    ...values.map((value) =>
      h("label", { class: "check" }, h("input", { type: "checkbox", name, value, checked: chosen.includes(value), onchange }), h("code", {}, value)),
    ),
  );
}

async function fillOrganisationChoices(organisationId, endpoint) {
  const organisation = (await organisations()).find((one) => one.id === organisationId);
  const models = organisation?.models ?? [];
  const model = byId("endpoint-model");
  const modelOptions = models.map((id) => h("option", { value: id }, id));
  // A YAML endpoint may name a model this list does not hold: still show what it says.
  if (endpoint && !models.includes(endpoint.model)) modelOptions.push(h("option", { value: endpoint.model }, endpoint.model));
  model.replaceChildren(...modelOptions);
  model.value = endpoint?.model ?? models[0] ?? "";
  const pluginIds = (organisation?.plugins ?? []).map((plugin) => plugin.id);
  choices(byId("endpoint-plugins"), "plugins", pluginIds, endpoint?.plugins ?? [], () => {
    form.querySelector('input[name="plugins-mode"][value="some"]').checked = true;
  });
  choices(byId("endpoint-guardrails"), "guardrails", organisation?.guardrails ?? [], endpoint?.guardrails ?? []);
}

async function openEndpointDialog(endpoint) {
  editing = endpoint;
  form.reset();
  clearFormError(form, "endpoint-form-error");
  const readOnly = Boolean(endpoint?.read_only);
  const list = await organisations();
  const select = byId("endpoint-organisation");
  select.replaceChildren(...list.map((organisation) => h("option", { value: organisation.id }, organisation.id)));
  select.value = endpoint?.organisation ?? (byId("organisation").value || list[0]?.id || "");
  select.disabled = Boolean(endpoint);
  byId("endpoint-slug").disabled = Boolean(endpoint);
  byId("endpoint-fields").disabled = readOnly;
  byId("endpoint-read-only").hidden = !readOnly;
  byId("endpoint-dialog-title").textContent = endpoint ? `${readOnly ? "Endpoint" : "Edit endpoint"} ${endpoint.organisation}/${endpoint.slug}` : "New endpoint";
  byId("endpoint-submit").hidden = readOnly;
  byId("endpoint-submit").textContent = endpoint ? "Save changes" : "Create endpoint";
  form.querySelector("[data-close]").textContent = readOnly ? "Close" : "Cancel";
  const tryLink = byId("endpoint-try");
  tryLink.hidden = !endpoint;
  if (endpoint) tryLink.href = playgroundAddress(endpoint);
  await fillOrganisationChoices(select.value, endpoint);
  if (endpoint) {
    byId("endpoint-slug").value = endpoint.slug;
    byId("endpoint-description").value = endpoint.description ?? "";
    byId("endpoint-system-prompt").value = endpoint.system_prompt ?? "";
    form.querySelector(`input[name="plugins-mode"][value="${endpoint.plugins === null ? "all" : "some"}"]`).checked = true;
    byId("endpoint-stream").checked = endpoint.stream;
    byId("endpoint-sessions").checked = endpoint.sessions.enabled;
    byId("endpoint-active").checked = endpoint.active;
    byId("endpoint-max-tokens").value = endpoint.max_tokens_per_request ?? "";
    byId("endpoint-input-schema").value = endpoint.input_schema ? JSON.stringify(endpoint.input_schema, null, 2) : "";
    byId("endpoint-output-schema").value = endpoint.output_schema ? JSON.stringify(endpoint.output_schema, null, 2) : "";
    byId("endpoint-schemas").open = Boolean(endpoint.input_schema || endpoint.output_schema);
  }
  openDialog(dialog, readOnly ? form.querySelector("[data-close]") : endpoint ? byId("endpoint-model") : byId("endpoint-slug"));
}

function readForm() {
  const checked = (name) => [...form.querySelectorAll(`input[name="${name}"]:checked`)].map((box) => box.value);
  const maxTokens = byId("endpoint-max-tokens").value.trim();
  if (maxTokens && !/^[1-9]\d*$/.test(maxTokens)) {
    throw Object.assign(new Error("Max tokens per request must be a whole number above 0 (empty: no cap)."), { param: "max_tokens_per_request" });
  }
  const slug = byId("endpoint-slug").value.trim();
  if (!editing && !/^[a-z0-9][a-z0-9_-]{0,63}$/.test(slug)) {
    throw Object.assign(new Error("The slug is lower-case letters, digits, - and _ (up to 64), starting with a letter or digit."), { param: "slug" });
  }
  return {
    slug,
    model: byId("endpoint-model").value,
    description: byId("endpoint-description").value.trim() || null,
    system_prompt: byId("endpoint-system-prompt").value.trim() ? byId("endpoint-system-prompt").value : null,
    plugins: form.querySelector('input[name="plugins-mode"]:checked').value === "all" ? null : checked("plugins"),
    stream: byId("endpoint-stream").checked,
    sessions: { ...(editing?.sessions ?? {}), enabled: byId("endpoint-sessions").checked },
    max_tokens_per_request: maxTokens ? Number(maxTokens) : null,
    guardrails: checked("guardrails"),
    input_schema: parseJsonObject(byId("endpoint-input-schema").value, "input_schema", "The input schema"),
    output_schema: parseJsonObject(byId("endpoint-output-schema").value, "output_schema", "The output schema"),
    active: byId("endpoint-active").checked,
  };
}

const same = (a, b) => JSON.stringify(a) === JSON.stringify(b);

async function submit() {
  const values = readForm();
  if (editing) {
    const { slug, ...fields } = values;
    const changes = Object.fromEntries(Object.entries(fields).filter(([field, value]) => !same(value, editing[field] ?? null)));
    if (!Object.keys(changes).length) {
      dialog.close();
      toast("Nothing changed.");
      return;
    }
    await api(`/endpoints/${encodeURIComponent(editing.organisation)}/${encodeURIComponent(slug || editing.slug)}`, { method: "PATCH", body: changes });
    toast(`Saved ${editing.organisation}/${editing.slug}: every gateway process serves the change within seconds.`);
  } else {
    const organisation = byId("endpoint-organisation").value;
    await api("/endpoints", { method: "POST", body: { organisation, ...values } });
    toast(`Created ${organisation}/${values.slug}.`);
  }
  dialog.close();
  await load();
}

function remove(endpoint) {
  confirmAction({
    title: "Delete this endpoint?",
    message: `${endpoint.organisation}/${endpoint.slug} stops answering on every gateway process and its settings are gone. To pause it instead, edit it and untick “Active”.`,
    confirmLabel: "Delete endpoint",
    action: async () => {
      await api(`/endpoints/${encodeURIComponent(endpoint.organisation)}/${encodeURIComponent(endpoint.slug)}`, { method: "DELETE" });
      toast(`Deleted ${endpoint.organisation}/${endpoint.slug}.`);
      await load();
    },
  });
}

startPage(async () => {
  const reload = () => load().catch((error) => showError("page-error", error));
  await organisationPicker(byId("organisation"), { onChange: reload });
  byId("new-endpoint").addEventListener("click", () => openEndpointDialog(null));
  byId("no-endpoints").querySelector("[data-action=new]").addEventListener("click", () => openEndpointDialog(null));
  byId("endpoint-organisation").addEventListener("change", (event) => fillOrganisationChoices(event.target.value, null));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    if (editing?.read_only) return;
    busy(byId("endpoint-submit"), submit).catch((error) => showFormError(form, "endpoint-form-error", error));
  });
  await load();
});
