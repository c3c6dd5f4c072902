// Sign in: the key is checked against the management API, then kept in this tab only.
import { ApiError, byId, request, session, showError } from "./core.js";

const form = byId("sign-in-form");
const input = byId("admin-key");
const submit = byId("sign-in-submit");

// Only a console address: never send the operator anywhere else after signing in.
function nextAddress() {
  const next = new URLSearchParams(location.search).get("next") || "/console";
  return next.startsWith("/console") && !next.startsWith("//") ? next : "/console";
}

function explain(error) {
  if (error instanceof ApiError && error.status === 401) return "This admin key is unknown or revoked.";
  if (error instanceof ApiError && error.status === 403) {
    return "That is a gateway key (pw_…). The console needs an admin key (pwa_…): mint one with “plugway admin keys create”.";
  }
  return error.message;
}

function fail(message) {
  input.setAttribute("aria-invalid", "true");
  showError("sign-in-error", new Error(message));
  input.focus();
  input.select();
}

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  const key = input.value.trim();
  if (!key) {
    fail("Paste an admin key (pwa_…).");
    return;
  }
  submit.disabled = true;
  try {
    await request("/organisations", { key });
    session.signIn(key);
    location.assign(nextAddress());
  } catch (error) {
    fail(explain(error));
  } finally {
    submit.disabled = false;
  }
});

input.addEventListener("input", () => {
  input.removeAttribute("aria-invalid");
  showError("sign-in-error", null);
});
