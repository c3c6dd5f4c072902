// What every console page shares: the admin key, the API client, DOM building, dialogs, formats.
//
// The admin key lives in this tab's sessionStorage only. Pages build their DOM with
// textContent (never from HTML strings), so nothing the API returns can run as a script.

const KEY_STORAGE = "plugway.console.adminKey";
const ORGANISATION_STORAGE = "plugway.console.organisation";

export const session = {
  key: () => sessionStorage.getItem(KEY_STORAGE),
  signIn: (key) => sessionStorage.setItem(KEY_STORAGE, key),
  signOut: () => sessionStorage.removeItem(KEY_STORAGE),
};

export class ApiError extends Error {
  constructor(status, error) {
    super(error?.message || `The gateway answered HTTP ${status}.`);
    this.status = status;
    this.code = error?.code ?? null;
    this.param = error?.param ?? null;
  }
}

// A mistake the page found before asking the gateway; `param` names the form field.
export class FieldError extends Error {
  constructor(param, message) {
    super(message);
    this.param = param;
  }
}

export function signInAddress() {
  return `/console/sign-in?next=${encodeURIComponent(location.pathname + location.search + location.hash)}`;
}

// Calls /admin/v1 and answers the Response; a failure becomes an ApiError with the envelope's message.
// An expired or revoked admin key sends the operator back to the sign-in page.
export async function request(path, { method = "GET", body, query, signal, key } = {}) {
  const url = new URL(`/admin/v1${path}`, location.origin);
  for (const [name, value] of Object.entries(query || {})) {
    if (value !== undefined && value !== null && value !== "") url.searchParams.set(name, String(value));
  }
  const headers = { Authorization: `Bearer ${key ?? session.key() ?? ""}` };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(url, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      signal,
      cache: "no-store",
    });
  } catch (error) {
    if (error.name === "AbortError") throw error;
    throw new ApiError(0, { message: "The gateway did not answer. Is it still running?", code: "network_error" });
  }
  if (!response.ok) {
    let envelope = null;
    try {
      envelope = (await response.json()).error;
    } catch {
      // not JSON: the status alone says what happened
    }
    if (response.status === 401 && key === undefined) {
      session.signOut();
      location.replace(signInAddress());
    }
    throw new ApiError(response.status, envelope);
  }
  return response;
}

export async function api(path, options) {
  const response = await request(path, options);
  return response.json();
}

// -- DOM ---------------------------------------------------------------------------------

export const byId = (id) => document.getElementById(id);

export function h(tag, props, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(props || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "class") element.className = value;
    else if (name === "text") element.textContent = value;
    else if (name === "dataset") Object.assign(element.dataset, value);
    else if (name.startsWith("on") && typeof value === "function") element.addEventListener(name.slice(2), value);
    else if (name === "value") element.value = value;
    else if (value === true) element.setAttribute(name, "");
    else element.setAttribute(name, String(value));
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    element.append(child instanceof Node ? child : String(child));
  }
  return element;
}

export function tags(values, { none = "all" } = {}) {
  if (values === null || values === undefined) return h("span", { class: "muted" }, none);
  if (!values.length) return h("span", { class: "muted" }, "none");
  return values.map((value) => h("span", { class: "tag" }, value));
}

export function badge(text, kind = "") {
  return h("span", { class: `badge ${kind}`.trim() }, text);
}

// -- errors, shown where they happened -----------------------------------------------------

export function describe(error) {
  if (error instanceof ApiError && error.status === 403 && error.code === "insufficient_permissions") {
    return `${error.message} (an admin key is needed)`;
  }
  return error?.message || String(error);
}

export function showError(target, error) {
  const element = typeof target === "string" ? byId(target) : target;
  if (!element) return;
  if (!error) {
    element.hidden = true;
    element.textContent = "";
    return;
  }
  element.textContent = describe(error);
  element.hidden = false;
}

// Shows the error under the form and marks the field it names (from the API's `param` or ours).
export function showFormError(form, target, error) {
  for (const invalid of form.querySelectorAll("[aria-invalid]")) invalid.removeAttribute("aria-invalid");
  showError(target, error);
  const param = error?.param ? String(error.param).split(".")[0] : null;
  const field = param ? form.querySelector(`[name="${CSS.escape(param)}"]`) : null;
  if (field) {
    field.setAttribute("aria-invalid", "true");
    field.focus();
  }
}

export function clearFormError(form, target) {
  showFormError(form, target, null);
}

// -- dialogs -----------------------------------------------------------------------------

export function openDialog(dialog, focus) {
  if (!dialog.open) dialog.showModal();
  (focus || dialog.querySelector("[autofocus]:not([disabled])"))?.focus();
}

// Asks before a destructive action, then runs it: a failure is shown in the dialog, which stays open.
export function confirmAction({ title, message, confirmLabel = "Confirm", action }) {
  const dialog = byId("confirm-dialog");
  const form = dialog.querySelector("form");
  const accept = byId("confirm-accept");
  byId("confirm-title").textContent = title;
  byId("confirm-message").textContent = message;
  accept.textContent = confirmLabel;
  showError("confirm-error", null);
  return new Promise((resolve) => {
    let done = false;
    const finish = (result) => {
      if (done) return;
      done = true;
      form.removeEventListener("submit", onSubmit);
      dialog.removeEventListener("close", onClose);
      resolve(result);
    };
    const onClose = () => finish(false);
    const onSubmit = async (event) => {
      if (event.submitter?.value !== "confirm") return; // Cancel: the dialog closes itself
      event.preventDefault();
      accept.disabled = true;
      try {
        await action();
        finish(true);
        dialog.close();
      } catch (error) {
        showError("confirm-error", error);
      } finally {
        accept.disabled = false;
      }
    };
    form.addEventListener("submit", onSubmit);
    dialog.addEventListener("close", onClose);
    openDialog(dialog, byId("confirm-cancel"));
  });
}

export function toast(message) {
  const element = h("div", { class: "toast", role: "status" }, message);
  byId("toasts").append(element);
  setTimeout(() => element.remove(), 5000);
}

// Disables a button while its work runs, so a double click does not do the work twice.
export async function busy(button, work) {
  button.disabled = true;
  button.setAttribute("aria-busy", "true");
  try {
    return await work();
  } finally {
    button.disabled = false;
    button.removeAttribute("aria-busy");
  }
}

// -- formats -----------------------------------------------------------------------------

const integerFormat = new Intl.NumberFormat("en-US");
const compactFormat = new Intl.NumberFormat("en-US", { notation: "compact", maximumFractionDigits: 1 });
const dollars = new Intl.NumberFormat("en-US", { style: "currency", currency: "USD" });

export const format = {
  integer: (value) => integerFormat.format(value ?? 0),
  compact: (value) => (Math.abs(value) < 10000 ? integerFormat.format(value ?? 0) : compactFormat.format(value)),
  usd: (value) => {
    if (value === null || value === undefined) return "–";
    if (value > 0 && value < 0.01) return `$${value.toFixed(4)}`;
    return dollars.format(value);
  },
  percent: (part, whole) => (whole ? `${((100 * part) / whole).toFixed(1)}%` : "–"),
  when: (iso) =>
    iso ? new Date(iso).toLocaleString("en-GB", { day: "numeric", month: "short", year: "numeric", hour: "2-digit", minute: "2-digit" }) : "–",
  duration: (ms) => (ms < 1000 ? `${Math.round(ms)} ms` : `${(ms / 1000).toFixed(2)} s`),
};

// Tool arguments and results are JSON more often than not: show them indented when they are.
export function prettyJson(value) {
  if (typeof value !== "string") return JSON.stringify(value, null, 2);
  try {
    return JSON.stringify(JSON.parse(value), null, 2);
  } catch {
    return value;
  }
}

export function parseWholeNumber(input, label) {
  const text = input.value.trim();
  if (text === "") return null;
  if (!/^\d+$/.test(text)) throw new FieldError(input.name, `${label} must be a whole number of 0 or more (empty: no limit).`);
  return Number(text);
}

export function parseJsonObject(text, param, label) {
  if (!text.trim()) return null;
  let value;
  try {
    value = JSON.parse(text);
  } catch (error) {
    throw new FieldError(param, `${label} must be valid JSON: ${error.message}`);
  }
  if (value === null || typeof value !== "object" || Array.isArray(value)) throw new FieldError(param, `${label} must be a JSON object.`);
  return value;
}

// -- organisations -----------------------------------------------------------------------

let organisationList = null;

export function organisations() {
  organisationList ??= api("/organisations").then((page) => page.data);
  return organisationList;
}

// Fills an organisation <select>, remembering the choice across pages for this tab.
export async function organisationPicker(select, { allowAll = true, onChange } = {}) {
  const list = await organisations();
  const options = list.map((organisation) => h("option", { value: organisation.id }, organisation.id));
  if (allowAll) options.unshift(h("option", { value: "" }, select.dataset.allLabel || "All organisations"));
  select.replaceChildren(...options);
  const wanted = new URLSearchParams(location.search).get("organisation") ?? sessionStorage.getItem(ORGANISATION_STORAGE) ?? "";
  const fallback = allowAll ? "" : list[0]?.id ?? "";
  select.value = list.some((organisation) => organisation.id === wanted) ? wanted : fallback;
  select.addEventListener("change", () => {
    sessionStorage.setItem(ORGANISATION_STORAGE, select.value);
    onChange?.(select.value);
  });
  return select.value;
}

// -- the page ----------------------------------------------------------------------------

// Every signed-in page starts here: without a key, off to sign in; with one, the page's own set-up.
export function startPage(setUp) {
  const key = session.key();
  if (!key) {
    location.replace(signInAddress());
    return;
  }
  document.body.classList.remove("signed-out");
  byId("signed-in-as").textContent = `Signed in with ${key.slice(0, 11)}…`;
  byId("sign-out").addEventListener("click", () => {
    session.signOut();
    location.assign("/console/sign-in");
  });
  // A field marked wrong is unmarked as soon as it is edited.
  document.addEventListener("input", (event) => event.target.removeAttribute?.("aria-invalid"));
  // Ctrl+Enter (or Cmd+Enter) submits a form from inside a textarea, where Enter is a new line.
  document.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey) && event.target.form) {
      event.preventDefault();
      event.target.form.requestSubmit();
    }
  });
  for (const button of document.querySelectorAll("dialog [data-close]")) {
    button.addEventListener("click", () => button.closest("dialog").close());
  }
  Promise.resolve()
    .then(setUp)
    .catch((error) => {
      if (!(error instanceof ApiError && error.status === 401)) showError("page-error", error);
    })
    // For whoever waits on the page (a person sees it, a browser test reads it): set-up is over.
    .finally(() => {
      document.body.dataset.ready = "true";
    });
}

// A "Load more" list over the API's {data, next_cursor} pages.
export class Pager {
  constructor({ fetchPage, renderRows, container, more, empty }) {
    Object.assign(this, { fetchPage, renderRows, container, more, empty });
    this.cursor = null;
    this.generation = 0;
    more?.addEventListener("click", () => busy(more, () => this.next()).catch((error) => showError("page-error", error)));
  }

  async reload() {
    this.generation += 1;
    this.cursor = null;
    const generation = this.generation;
    const page = await this.fetchPage(null);
    if (generation !== this.generation) return; // a newer reload won
    this.container.replaceChildren(...this.renderRows(page.data));
    this.finishPage(page);
  }

  async next() {
    const generation = this.generation;
    const page = await this.fetchPage(this.cursor);
    if (generation !== this.generation) return;
    this.container.append(...this.renderRows(page.data));
    this.finishPage(page);
  }

  finishPage(page) {
    this.cursor = page.next_cursor;
    if (this.more) this.more.hidden = !this.cursor;
    if (this.empty) this.empty.hidden = this.container.children.length > 0;
  }
}
