// Keys: list, mint (the key is shown once), edit limits/scopes/models, revoke (confirmed).
import {
  Pager,
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
  organisations,
  parseWholeNumber,
  showError,
  showFormError,
  startPage,
  tags,
  toast,
} from "./core.js";

const ALL_SCOPES = ["chat", "embeddings", "mcp"];
const form = byId("key-form");
const dialog = byId("key-dialog");
let editing = null; // the key being edited, or null when minting
let pager;

function limits(key) {
  const parts = [];
  if (key.rpm !== null) parts.push(`${format.integer(key.rpm)} rpm`);
  if (key.daily_tokens !== null) parts.push(`${format.compact(key.daily_tokens)} tokens/day`);
  return parts.length ? parts.join(" · ") : h("span", { class: "muted" }, "no limits");
}

function keyRow(key) {
  const revoked = Boolean(key.revoked_at);
  return h(
    "tr",
    { class: revoked ? "revoked" : null, dataset: { keyId: key.id } },
    h("td", {}, key.name || h("span", { class: "muted" }, "unnamed"), h("span", { class: "sub" }, key.id)),
    h("td", {}, key.organisation),
    h("td", {}, h("code", {}, `${key.prefix}…`)),
    h("td", {}, tags(key.scopes)),
    h("td", {}, tags(key.models)),
    h("td", {}, limits(key)),
    h("td", { class: "when" }, format.when(key.created_at), revoked ? h("span", { class: "sub" }, badge("revoked", "bad"), " ", format.when(key.revoked_at)) : null),
    h(
      "td",
      { class: "actions" },
      revoked
        ? null
        : [
            h("button", { type: "button", class: "secondary small", onclick: () => openKeyDialog(key), "aria-label": `Edit ${key.name || key.id}` }, "Edit"),
            h("button", { type: "button", class: "secondary small danger-text", onclick: () => revoke(key), "aria-label": `Revoke ${key.name || key.id}` }, "Revoke"),
          ],
    ),
  );
}

// -- the mint / edit dialog ------------------------------------------------------------------

function modelChoices(models, chosen) {
  byId("key-models").replaceChildren(
    ...models.map((model) =>
      h(
        "label",
        { class: "check" },
        h("input", { type: "checkbox", name: "models", value: model, checked: Boolean(chosen?.includes(model)), onchange: () => setModelsMode("some") }),
        h("code", {}, model),
      ),
    ),
  );
}

function setModelsMode(mode) {
  form.querySelector(`input[name="models-mode"][value="${mode}"]`).checked = true;
}

async function showModelsOf(organisationId, chosen) {
  const organisation = (await organisations()).find((one) => one.id === organisationId);
  modelChoices(organisation?.models ?? [], chosen);
}

async function openKeyDialog(key) {
  editing = key;
  form.reset();
  clearFormError(form, "key-form-error");
  const select = byId("key-organisation");
  const list = await organisations();
  select.replaceChildren(...list.map((organisation) => h("option", { value: organisation.id }, organisation.id)));
  byId("key-dialog-title").textContent = key ? `Edit key ${key.name ? `“${key.name}”` : key.prefix + "…"}` : "Mint a key";
  byId("key-submit").textContent = key ? "Save changes" : "Mint key";
  select.disabled = Boolean(key);
  if (key) {
    select.value = key.organisation;
    byId("key-name").value = key.name ?? "";
    byId("key-rpm").value = key.rpm ?? "";
    byId("key-daily-tokens").value = key.daily_tokens ?? "";
    for (const box of form.querySelectorAll('input[name="scopes"]')) box.checked = key.scopes === null || key.scopes.includes(box.value);
    setModelsMode(key.models === null ? "all" : "some");
  } else {
    select.value = byId("organisation").value || list[0]?.id || "";
  }
  await showModelsOf(select.value, key?.models);
  openDialog(dialog, key ? byId("key-name") : select);
}

function readForm() {
  const scopes = [...form.querySelectorAll('input[name="scopes"]:checked')].map((box) => box.value);
  const someModels = form.querySelector('input[name="models-mode"]:checked').value === "some";
  const models = [...form.querySelectorAll('input[name="models"]:checked')].map((box) => box.value);
  if (!scopes.length) throw Object.assign(new Error("Tick at least one scope: a key with none could do nothing."), { param: "scopes" });
  if (someModels && !models.length) throw Object.assign(new Error("Tick the models this key may use, or allow every model."), { param: "models" });
  return {
    name: byId("key-name").value.trim() || null,
    rpm: parseWholeNumber(byId("key-rpm"), "Requests per minute"),
    daily_tokens: parseWholeNumber(byId("key-daily-tokens"), "Tokens per day"),
    // Every scope ticked is stored as "all", so a scope added later is not withheld from the key.
    scopes: scopes.length === ALL_SCOPES.length ? null : scopes,
    models: someModels ? models : null,
  };
}

const same = (a, b) => JSON.stringify(a) === JSON.stringify(b);

async function submit() {
  const values = readForm();
  if (editing) {
    // Only what changed: PATCH leaves the other fields as they are.
    const changes = Object.fromEntries(Object.entries(values).filter(([field, value]) => !same(value, editing[field])));
    if (!Object.keys(changes).length) {
      dialog.close();
      toast("Nothing changed.");
      return;
    }
    await api(`/keys/${encodeURIComponent(editing.id)}`, { method: "PATCH", body: changes });
    dialog.close();
    toast("Key updated: every gateway process applies it within the key cache's lifetime.");
  } else {
    const created = await api("/keys", { method: "POST", body: { organisation: byId("key-organisation").value, ...values } });
    dialog.close();
    showCreated(created);
  }
  await pager.reload();
}

// -- the key, once ---------------------------------------------------------------------------

async function showCreated(created) {
  const createdDialog = byId("key-created-dialog");
  const organisation = (await organisations()).find((one) => one.id === created.organisation);
  const model = created.models?.[0] ?? organisation?.models?.[0] ?? "MODEL";
  byId("new-key").value = created.key;
  byId("new-key-example").textContent = [
    `curl ${location.origin}/v1/chat/completions \\`,
    `  -H "Authorization: Bearer ${created.key}" \\`,
    `  -H "Content-Type: application/json" \\`,
    `  -d '{"model": "${model}", "messages": [{"role": "user", "content": "What is 17 * 23?"}]}'`,
  ].join("\n");
  byId("copy-key").textContent = "Copy";
  openDialog(createdDialog, byId("copy-key"));
}

async function copyKey() {
  const input = byId("new-key");
  try {
    await navigator.clipboard.writeText(input.value);
  } catch {
    // No clipboard API (a plain-HTTP address other than localhost): select it for Ctrl+C.
    input.select();
    document.execCommand?.("copy");
  }
  byId("copy-key").textContent = "Copied";
}

// -- revoke ----------------------------------------------------------------------------------

function revoke(key) {
  confirmAction({
    title: "Revoke this key?",
    message: `Key ${key.name ? `“${key.name}” ` : ""}(${key.prefix}…) of ${key.organisation} will be refused on every gateway process within the key cache's lifetime. This cannot be undone.`,
    confirmLabel: "Revoke key",
    action: async () => {
      const revoked = await api(`/keys/${encodeURIComponent(key.id)}`, { method: "DELETE" });
      toast(`Key revoked: refused everywhere within ${revoked.takes_effect_within_s} s.`);
      await pager.reload();
    },
  });
}

startPage(async () => {
  const picker = byId("organisation");
  const includeRevoked = byId("include-revoked");
  pager = new Pager({
    fetchPage: (cursor) => api("/keys", { query: { organisation: picker.value, include_revoked: includeRevoked.checked, limit: 50, cursor } }),
    renderRows: (rows) => rows.map(keyRow),
    container: byId("keys").tBodies[0],
    more: byId("more-keys"),
    empty: byId("no-keys"),
  });
  const reload = () => pager.reload().catch((error) => showError("page-error", error));
  await organisationPicker(picker, { onChange: reload });
  includeRevoked.addEventListener("change", reload);
  byId("mint-key").addEventListener("click", () => openKeyDialog(null));
  byId("no-keys").querySelector("[data-action=mint]").addEventListener("click", () => openKeyDialog(null));
  byId("key-organisation").addEventListener("change", (event) => showModelsOf(event.target.value, null));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    busy(byId("key-submit"), submit).catch((error) => showFormError(form, "key-form-error", error));
  });
  byId("copy-key").addEventListener("click", copyKey);
  // The secret leaves the page as soon as the operator is done with it.
  byId("key-created-dialog").addEventListener("close", () => {
    byId("new-key").value = "";
    byId("new-key-example").textContent = "";
  });
  await pager.reload();
});
