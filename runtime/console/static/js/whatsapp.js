// WhatsApp: conversations (messages in, replies out, the tools they used) and dead letters to requeue.
import { Pager, api, badge, busy, byId, confirmAction, format, h, showError, startPage, toast } from "./core.js";

let conversations;
let deadLetters;
let openConversation = null;

const STATUS_KIND = { answered: "good", sent: "good", delivered: "good", read: "good", failed: "bad", rejected: "bad", pending: "warn", processing: "warn", accepted: "warn" };
const statusBadge = (status) => badge(status, STATUS_KIND[status] ?? "");

// -- tabs ------------------------------------------------------------------------------------

function selectTab(name) {
  for (const [tab, panel] of [["tab-conversations", "panel-conversations"], ["tab-dead-letters", "panel-dead-letters"]]) {
    const selected = tab === `tab-${name}`;
    byId(tab).setAttribute("aria-selected", String(selected));
    byId(tab).tabIndex = selected ? 0 : -1;
    byId(panel).hidden = !selected;
  }
  history.replaceState(null, "", name === "dead-letters" ? "#dead-letters" : location.pathname);
}

// -- conversations -----------------------------------------------------------------------------

function conversationItem(conversation) {
  const button = h(
    "button",
    { type: "button", dataset: { conversation: conversation.conversation }, onclick: () => showConversation(conversation, button) },
    h("span", { class: "who" }, conversation.sender_name || `+${conversation.sender}`),
    h("span", { class: "meta" }, `${conversation.app} · ${conversation.messages} ${conversation.messages === 1 ? "message" : "messages"} · ${format.when(conversation.last_message_at)}`),
  );
  return h("li", {}, button);
}

function toolChips(trace) {
  const calls = trace?.tool_calls ?? [];
  if (!calls.length) return null;
  return h(
    "div",
    { class: "wa-tools", "aria-label": "Tools used" },
    calls.map((call) => h("span", { class: "tag", title: call.error || "" }, `${call.ok ? "✓" : "✗"} ${call.name} · ${format.duration(call.duration_ms)}`)),
  );
}

function messageItems(message) {
  const incoming = h(
    "div",
    { class: "wa-in", dataset: { messageId: String(message.id) } },
    h("div", { class: "bubble" }, message.text ?? h("span", { class: "muted" }, `(${message.type} message without text)`)),
    h(
      "div",
      { class: "wa-meta" },
      format.when(message.received_at),
      " · ",
      statusBadge(message.status),
      message.attempts > 1 ? ` · ${message.attempts} attempts` : "",
      message.error ? h("span", { class: "danger-text" }, ` · ${message.error}`) : null,
    ),
  );
  const parts = message.sent.length ? message.sent : message.reply ? [{ text: message.reply, status: "not sent yet" }] : [];
  const outgoing = parts.map((part) =>
    h(
      "div",
      { class: "wa-out" },
      h("div", { class: "bubble" }, part.text),
      h("div", { class: "wa-meta" }, statusBadge(part.status), part.error ? h("span", { class: "danger-text" }, ` · ${part.error}`) : null),
    ),
  );
  if (outgoing.length) outgoing.at(-1).append(toolChips(message.trace) ?? "");
  return [incoming, ...outgoing];
}

async function showConversation(conversation, button) {
  openConversation = conversation;
  for (const other of byId("conversations").querySelectorAll("button")) other.removeAttribute("aria-current");
  button?.setAttribute("aria-current", "true");
  const panel = byId("conversation");
  const page = await api(`/whatsapp/conversations/${encodeURIComponent(conversation.conversation)}/messages`);
  panel.replaceChildren(
    h("h2", {}, conversation.sender_name || `+${conversation.sender}`, " ", h("span", { class: "muted" }, `· ${conversation.app}`)),
    h("div", { class: "messages" }, page.data.flatMap(messageItems)),
  );
}

// -- dead letters ------------------------------------------------------------------------------

function requeue(letter) {
  confirmAction({
    title: "Requeue this message?",
    message: `The reply worker answers “${letter.text ?? letter.id}” from +${letter.sender} again, once. Parts of a reply already sent are not sent twice.`,
    confirmLabel: "Requeue",
    action: async () => {
      await api(`/whatsapp/dead-letters/${letter.id}/requeue`, { method: "POST" });
      toast("Requeued: the reply worker picks it up now.");
      await Promise.all([deadLetters.reload(), conversations.reload()]);
      updateCount();
    },
  });
}

function deadLetterRow(letter) {
  return h(
    "tr",
    { dataset: { letterId: String(letter.id) } },
    h("td", { class: "when" }, format.when(letter.received_at)),
    h("td", {}, letter.app),
    h("td", {}, `+${letter.sender}`),
    h("td", {}, letter.text ?? h("span", { class: "muted" }, "(no text)")),
    h("td", { class: "danger-text" }, letter.error ?? ""),
    h("td", { class: "num" }, String(letter.attempts)),
    h("td", {}, statusBadge(letter.status)),
    h(
      "td",
      { class: "actions" },
      letter.requeueable
        ? h("button", { type: "button", class: "secondary small", onclick: () => requeue(letter), "aria-label": `Requeue message ${letter.id}` }, "Requeue")
        : h("span", { class: "muted", title: "A malformed message cannot be answered" }, "not requeueable"),
    ),
  );
}

function updateCount() {
  const rows = byId("dead-letters").tBodies[0].children.length;
  byId("dead-letter-count").textContent = rows ? `${rows}${deadLetters.cursor ? "+" : ""}` : "";
}

async function load() {
  await Promise.all([conversations.reload(), deadLetters.reload()]);
  updateCount();
  if (openConversation) {
    const button = byId("conversations").querySelector(`button[data-conversation="${CSS.escape(openConversation.conversation)}"]`);
    await showConversation(openConversation, button);
  }
  showError("page-error", null);
}

startPage(async () => {
  conversations = new Pager({
    fetchPage: (cursor) => api("/whatsapp/conversations", { query: { limit: 50, cursor } }),
    renderRows: (rows) => rows.map(conversationItem),
    container: byId("conversations"),
    more: byId("more-conversations"),
    empty: byId("no-conversations"),
  });
  deadLetters = new Pager({
    fetchPage: (cursor) => api("/whatsapp/dead-letters", { query: { limit: 50, cursor } }),
    renderRows: (rows) => rows.map(deadLetterRow),
    container: byId("dead-letters").tBodies[0],
    more: byId("more-dead-letters"),
    empty: byId("no-dead-letters"),
  });
  byId("tab-conversations").addEventListener("click", () => selectTab("conversations"));
  byId("tab-dead-letters").addEventListener("click", () => selectTab("dead-letters"));
  // Arrow keys move between the two tabs, as in any tab list.
  document.querySelector('[role="tablist"]').addEventListener("keydown", (event) => {
    if (event.key !== "ArrowLeft" && event.key !== "ArrowRight") return;
    const next = byId("tab-conversations").getAttribute("aria-selected") === "true" ? "dead-letters" : "conversations";
    selectTab(next);
    byId(`tab-${next}`).focus();
  });
  byId("refresh").addEventListener("click", (event) => busy(event.currentTarget, load).catch((error) => showError("page-error", error)));
  selectTab(location.hash === "#dead-letters" ? "dead-letters" : "conversations");
  await load();
});
