// OAuth on /mcp: consent to an application's sign-in (?request=…), and the applications connected.
import { api, busy, byId, confirmAction, format, h, parseWholeNumber, showError, showFormError, startPage, tags, toast } from "./core.js";

function grantRow(grant, reload) {
  const revoke = h("button", { type: "button", class: "danger small", dataset: { grant: grant.id } }, "Revoke");
  revoke.addEventListener("click", () =>
    confirmAction({
      title: "Revoke this application?",
      message: `${grant.client_name || grant.client_id} loses access to ${grant.organisation}'s tools at once, and its key ${grant.key_id} is revoked.`,
      confirmLabel: "Revoke",
      action: async () => {
        await api(`/oauth/grants/${encodeURIComponent(grant.id)}`, { method: "DELETE" });
        toast(`Revoked ${grant.client_name || grant.client_id}.`);
        await reload();
      },
    }),
  );
  return h(
    "tr",
    { dataset: { grant: grant.id } },
    h("td", {}, h("strong", {}, grant.client_name || "(unnamed)"), h("br"), h("code", { class: "muted" }, grant.client_id)),
    h("td", {}, grant.organisation),
    h("td", {}, h("code", {}, grant.key_id)),
    h("td", {}, tags(grant.scopes)),
    h("td", { class: "when" }, format.when(grant.created_at)),
    h("td", {}, h("code", {}, grant.approved_by)),
    h("td", {}, revoke),
  );
}

async function showConsent(requestId) {
  const pending = await api(`/oauth/requests/${encodeURIComponent(requestId)}`);
  byId("consent-client").textContent = pending.client_name || "An unnamed application";
  byId("consent-client-id").textContent = pending.client_id;
  byId("consent-resource").textContent = pending.resource;
  byId("consent-redirect").textContent = pending.redirect_host;
  byId("consent-organisation").replaceChildren(...pending.organisations.map((id) => h("option", { value: id }, id)));
  byId("consent-scopes").replaceChildren(
    ...pending.scopes.map((scope) => h("label", { class: "inline" }, h("input", { type: "checkbox", name: "scopes", value: scope, checked: true }), ` ${scope}`)),
  );
  const form = byId("consent-form");
  const answer = async (path, body) => {
    const { redirect_to: redirectTo } = await api(`/oauth/requests/${encodeURIComponent(requestId)}/${path}`, { method: "POST", body });
    location.assign(redirectTo);
  };
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    busy(byId("consent-approve"), async () => {
      const scopes = [...form.querySelectorAll("input[name=scopes]:checked")].map((input) => input.value);
      const body = {
        organisation: byId("consent-organisation").value,
        scopes,
        rpm: parseWholeNumber(byId("consent-rpm"), "Requests per minute"),
        daily_tokens: parseWholeNumber(byId("consent-daily-tokens"), "Tokens per day"),
      };
      await answer("approve", body);
    }).catch((error) => showFormError(form, "consent-error", error));
  });
  byId("consent-deny").addEventListener("click", (event) =>
    busy(event.currentTarget, () => answer("deny")).catch((error) => showFormError(form, "consent-error", error)),
  );
  byId("consent").hidden = false;
}

startPage(async () => {
  const body = byId("grants").tBodies[0];
  const reload = async () => {
    const page = await api("/oauth/grants");
    body.replaceChildren(...page.data.map((grant) => grantRow(grant, reload)));
    byId("no-grants").hidden = page.data.length > 0;
  };
  byId("refresh").addEventListener("click", (event) => busy(event.currentTarget, reload).catch((error) => showError("page-error", error)));
  const requestId = new URLSearchParams(location.search).get("request");
  if (requestId) await showConsent(requestId);
  await reload();
});
