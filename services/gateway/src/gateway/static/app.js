// The chat web client: sign in, session list with unread badges, one open conversation with
// history, live messages, receipts and typing. REST for reads and marks, STOMP for live events
// and sends (REST when the socket is down). Everything user-provided goes in via textContent.

import { Api, ApiError } from "./api.js";
import { Live, LiveError } from "./live.js";

const AUTH_KEY = "chat.auth";
const PAGE_SIZE = 50;
const POLL_MS = 4000; // catch-up over REST while the socket is down
const TYPING_IDLE_MS = 3000; // we stop "typing" after this long without a key
const TYPING_REFRESH_MS = 3000; // ... and repeat "typing" this often while typing
const TYPING_SHOW_MS = 6000; // the peer's indicator fades if not refreshed
const MAX_CONTENT_BYTES = 4096;
const SENT_KEEP_MS = 5 * 60 * 1000; // a committed send waits this long for its message

const $ = (id) => document.getElementById(id);
const encoder = new TextEncoder();

// ---- state -------------------------------------------------------------------------------

const state = {
  auth: null, // {token, email, exp}
  sessions: new Map(), // sessionId -> summary (+ maxSeq)
  open: null, // Conversation
  outbox: new Map(), // clientMessageId -> pending send
  connection: "offline",
  delivered: new Map(), // sessionId -> highest delivered mark asked for
  pendingDelivered: new Map(), // sessionId -> delivered mark not sent yet
  deliveredTimer: null,
  refreshTimer: null,
  expiryTimer: null,
  typingOut: { sessionId: null, on: false, lastSent: 0, idleTimer: null },
  typingIn: { timer: null },
  presence: new Map(), // peer email -> {online, lastSeen}
  polling: false,
};

const api = new Api(
  () => state.auth && state.auth.token,
  () => signOut("Your sign-in expired or was refused; sign in again."),
);

const live = new Live({
  token: () => (state.auth && !expired(state.auth) ? state.auth.token : null),
  onState: (s) => setConnection(s),
  onEvent: (event, body) => onEvent(event, body),
  onConnected: () => onConnected(),
  resumeAfter: (sessionId) =>
    state.open && state.open.sessionId === sessionId ? state.open.contiguous : 0,
  onError: (message) => showAlert(`Live connection: ${message}`),
});

class Conversation {
  constructor(summary) {
    this.sessionId = summary.sessionId;
    this.summary = summary;
    this.messages = new Map(); // seq -> message view (+ via)
    this.ids = new Set(); // messageId
    this.contiguous = 0; // every seq from the loaded ones up to this one is held
    this.olderPath = null; // Link rel="next" of the last older page
    this.loaded = false;
    this.loadingOlder = false;
    this.peerRead = 0;
    this.peerDelivered = 0;
    // Our read mark as far as we know: nothing unread means read up to the last message.
    this.readSent = summary.unreadCount ? 0 : summary.maxSeq || 0;
  }

  /** Adds or refreshes a message; false when it changed nothing (a duplicate). */
  merge(message, via) {
    const known = this.messages.get(message.seq);
    if (known) {
      let changed = false;
      for (const flag of ["delivered", "seen"]) {
        if (message[flag] && !known[flag]) {
          known[flag] = true;
          changed = true;
        }
      }
      this.noteFlags(known);
      return changed;
    }
    if (this.ids.has(message.messageId)) return false;
    this.messages.set(message.seq, { ...message, via });
    this.ids.add(message.messageId);
    this.noteFlags(message);
    this.advance();
    return true;
  }

  noteFlags(message) {
    if (!isMine(message)) return;
    if (message.seen) this.peerRead = Math.max(this.peerRead, message.seq);
    if (message.seen || message.delivered) {
      this.peerDelivered = Math.max(this.peerDelivered, message.seq);
    }
  }

  advance() {
    while (this.messages.has(this.contiguous + 1)) this.contiguous += 1;
  }

  /** Highest seq of a peer message held. */
  lastPeerSeq() {
    let last = 0;
    for (const m of this.messages.values()) if (!isMine(m) && m.seq > last) last = m.seq;
    return last;
  }

  status(message) {
    if (message.seen || message.seq <= this.peerRead) return "seen";
    if (message.delivered || message.seq <= this.peerDelivered) return "delivered";
    return "sent";
  }
}

// ---- helpers -----------------------------------------------------------------------------

function uuid4() {
  const b = crypto.getRandomValues(new Uint8Array(16));
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const h = [...b].map((x) => x.toString(16).padStart(2, "0")).join("");
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

function tokenClaims(token) {
  const part = token.split(".")[1];
  if (!part) throw new Error("not a JWT");
  const b64 = part.replace(/-/g, "+").replace(/_/g, "/").padEnd(Math.ceil(part.length / 4) * 4, "=");
  const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
  return JSON.parse(new TextDecoder().decode(bytes));
}

function expired(auth) {
  return auth.exp !== undefined && Date.now() / 1000 >= auth.exp;
}

const norm = (email) => String(email || "").trim().toLowerCase();
const isMine = (message) => state.auth !== null && norm(message.senderEmail) === state.auth.email;

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function timeOf(iso) {
  const date = new Date(iso);
  return Number.isNaN(date.getTime())
    ? ""
    : date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
}

let alertTimer = null;
function showAlert(message) {
  const box = $("alert");
  box.textContent = message;
  box.hidden = false;
  clearTimeout(alertTimer);
  alertTimer = setTimeout(() => {
    box.hidden = true;
  }, 8000);
}

function describe(error) {
  if (error instanceof ApiError) return error.detail;
  return error && error.message ? error.message : String(error);
}

// ---- sign in / out -----------------------------------------------------------------------

async function signIn(email, pastedToken) {
  let token = pastedToken;
  if (!token) {
    try {
      token = await api.devToken(email);
    } catch (err) {
      if (err instanceof ApiError && err.status === 404) {
        $("signin-token-box").open = true;
        throw new Error("This gateway hands out no development tokens: sign in with a token.");
      }
      throw err;
    }
  }
  const claims = tokenClaims(token);
  const auth = { token, email: norm(claims.sub), exp: claims.exp };
  if (!auth.email) throw new Error("the token names no user (sub)");
  if (expired(auth)) throw new Error("the token has expired");
  sessionStorage.setItem(AUTH_KEY, JSON.stringify(auth));
  await start(auth);
}

async function start(auth) {
  state.auth = auth;
  $("whoami").textContent = auth.email;
  $("account").hidden = false;
  $("signin-view").hidden = true;
  $("chat-view").hidden = false;
  clearTimeout(state.expiryTimer);
  if (auth.exp !== undefined) {
    const ms = Math.max(0, auth.exp * 1000 - Date.now());
    state.expiryTimer = setTimeout(() => signOut("Your sign-in expired; sign in again."), Math.min(ms, 2 ** 31 - 1));
  }
  restoreOutbox();
  live.start();
  await refreshSessions();
}

function signOut(message) {
  if (!state.auth) return;
  const email = state.auth.email;
  state.auth = null;
  sessionStorage.removeItem(AUTH_KEY);
  sessionStorage.removeItem(`chat.outbox.${email}`);
  live.stop();
  clearTimeout(state.expiryTimer);
  state.sessions.clear();
  state.outbox.clear();
  state.delivered.clear();
  state.open = null;
  $("account").hidden = true;
  $("chat-view").hidden = true;
  $("signin-view").hidden = false;
  renderSessions();
  renderConversation();
  if (message) showAlert(message);
}

// ---- connection ----------------------------------------------------------------------------

function setConnection(s) {
  state.connection = s;
  const pill = $("conn-status");
  pill.dataset.state = s;
  pill.textContent = s;
}

function onConnected() {
  // Whatever happened while we were away: badges from the list, the open session from the
  // topic's resume, and sends that never got their receipt go again (same clientMessageId).
  scheduleRefresh(0);
  for (const entry of state.outbox.values()) if (entry.state === "sending") deliver(entry);
  if (state.typingOut.on && state.open) live.typing(state.open.sessionId, true);
}

async function poll() {
  if (!state.auth || live.connected || state.polling) return;
  state.polling = true;
  try {
    await pollOnce();
  } finally {
    state.polling = false;
  }
}

async function pollOnce() {
  await refreshSessions().catch(() => {});
  const c = state.open;
  if (!c || !c.loaded) return;
  try {
    // Newer messages, oldest pages first, then the receipts of the newest ones.
    for (let pages = 0; pages < 20; pages++) {
      const page = await api.history(c.sessionId, { after: c.contiguous, limit: 100 });
      if (state.open !== c) return;
      for (const m of page.messages) acceptMessage(m, "poll");
      if (!page.next || page.messages.length === 0) break;
    }
    const recent = await api.history(c.sessionId, { limit: 20 });
    if (state.open !== c) return;
    for (const m of recent.messages) c.merge(m, "poll");
    renderConversation();
    maybeMarkRead();
  } catch {
    // offline too; the next tick tries again
  }
}

// ---- events from the live connection -----------------------------------------------------

function onEvent(event, body) {
  switch (event) {
    case "message":
    case "ack":
      if (body && body.messageId && body.sessionId) acceptMessage(body, "live");
      break;
    case "receipt":
      onReceipt(body);
      break;
    case "typing":
      onTyping(body);
      break;
    case "error":
      onSendError(body);
      break;
    case "presence":
      if (body && body.email) setPresence([body]);
      break;
    default:
      break; // future events: nothing to show yet
  }
}

/** One message from anywhere (live, REST answer, history poll): de-duplicated by seq/id. */
function acceptMessage(message, via) {
  const mine = isMine(message);
  if (mine && state.outbox.has(message.clientMessageId)) {
    state.outbox.delete(message.clientMessageId);
    saveOutbox();
  }
  const summary = state.sessions.get(message.sessionId);
  if (!summary) {
    scheduleRefresh(200); // a session we do not list yet (the peer opened it)
  } else {
    const fresh = message.seq > (summary.maxSeq || 0);
    if (fresh) {
      summary.maxSeq = message.seq;
      summary.lastMessage = message;
      const viewing = state.open && state.open.sessionId === message.sessionId && canSee();
      if (!mine && !viewing) summary.unreadCount = (summary.unreadCount || 0) + 1;
    }
  }
  const c = state.open;
  if (c && c.sessionId === message.sessionId) {
    if (c.merge(message, via)) {
      if (!mine) hideTyping();
      renderConversation();
      maybeMarkRead();
    }
  }
  if (!mine) queueDelivered(message.sessionId, message.seq);
  renderSessions();
}

function onReceipt(receipt) {
  if (!receipt || !receipt.sessionId) return;
  const c = state.open && state.open.sessionId === receipt.sessionId ? state.open : null;
  if (norm(receipt.email) === (state.auth && state.auth.email)) {
    // Our own mark (maybe from another device).
    if (receipt.kind === "read") {
      const summary = state.sessions.get(receipt.sessionId);
      if (summary && receipt.upToSeq >= (summary.maxSeq || 0)) summary.unreadCount = 0;
      else scheduleRefresh(300);
      if (c) c.readSent = Math.max(c.readSent, receipt.upToSeq);
      renderSessions();
    }
    return;
  }
  if (!c) return;
  if (receipt.kind === "read") c.peerRead = Math.max(c.peerRead, receipt.upToSeq);
  if (receipt.kind === "read" || receipt.kind === "delivered") {
    c.peerDelivered = Math.max(c.peerDelivered, receipt.upToSeq);
  }
  renderConversation();
}

function onTyping(event) {
  const c = state.open;
  if (!c || !event || event.sessionId !== c.sessionId) return;
  if (norm(event.email) === state.auth.email) return;
  if (!event.typing) {
    hideTyping();
    return;
  }
  const box = $("typing");
  box.textContent = `${c.summary.peer.displayName || event.email} is typing…`;
  box.hidden = false;
  clearTimeout(state.typingIn.timer);
  state.typingIn.timer = setTimeout(hideTyping, TYPING_SHOW_MS);
}

function hideTyping() {
  clearTimeout(state.typingIn.timer);
  $("typing").hidden = true;
}

function onSendError(error) {
  const entry = error && error.clientMessageId ? state.outbox.get(error.clientMessageId) : null;
  if (entry) {
    entry.state = "failed";
    entry.error = error.detail || error.code;
    saveOutbox();
    renderConversation();
  } else if (error) {
    showAlert(error.detail || error.code || "the server refused what was sent");
  }
}

// ---- sessions --------------------------------------------------------------------------------

function scheduleRefresh(ms) {
  clearTimeout(state.refreshTimer);
  state.refreshTimer = setTimeout(() => refreshSessions().catch(() => {}), ms);
}

async function refreshSessions() {
  if (!state.auth) return;
  const list = await api.sessions();
  const seen = new Set();
  for (const s of list) {
    seen.add(s.sessionId);
    const summary = { ...s, maxSeq: s.lastMessage ? s.lastMessage.seq : 0 };
    if (state.open && state.open.sessionId === s.sessionId && canSee()) summary.unreadCount = 0;
    state.sessions.set(s.sessionId, summary);
    if (state.open && state.open.sessionId === s.sessionId) state.open.summary = summary;
  }
  for (const id of [...state.sessions.keys()]) if (!seen.has(id)) state.sessions.delete(id);
  renderSessions();
  loadPresence().catch(() => {}); // unknown until a change arrives (503 without Redis)
}

// ---- presence of the peers ----------------------------------------------------------------

async function loadPresence() {
  const emails = [...new Set([...state.sessions.values()].map((s) => norm(s.peer.email)))];
  for (let i = 0; i < emails.length; i += 100) setPresence(await api.presence(emails.slice(i, i + 100)));
}

function setPresence(states) {
  for (const p of states) state.presence.set(norm(p.email), { online: p.online, lastSeen: p.lastSeen });
  renderSessions();
  renderPresence();
}

/** "online", "last seen 14:05" (or a date when not today), or "" when not known. */
function presenceOf(email) {
  const p = state.presence.get(norm(email));
  if (!p) return { state: "unknown", text: "" };
  if (p.online) return { state: "online", text: "online" };
  if (!p.lastSeen) return { state: "offline", text: "offline" };
  const seen = new Date(p.lastSeen);
  const today = seen.toDateString() === new Date().toDateString();
  const when = today
    ? seen.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" })
    : seen.toLocaleDateString();
  return { state: "offline", text: `last seen ${when}` };
}

function renderPresence() {
  const c = state.open;
  const node = $("chat-presence");
  const p = c ? presenceOf(c.summary.peer.email) : { state: "unknown", text: "" };
  node.dataset.state = p.state;
  node.textContent = p.text;
}

function summaryFromInit(view) {
  const [a, b] = view.participants;
  const me = norm(a.email) === state.auth.email ? a : b;
  const peer = me === a ? b : a;
  return {
    sessionId: view.sessionId,
    intent: view.intent,
    me,
    peer,
    lastMessage: null,
    unreadCount: 0,
    createdAt: view.createdAt,
    maxSeq: 0,
  };
}

function renderSessions() {
  const list = $("sessions");
  const sorted = [...state.sessions.values()].sort((x, y) => {
    const tx = (x.lastMessage && x.lastMessage.sentAt) || x.createdAt || "";
    const ty = (y.lastMessage && y.lastMessage.sentAt) || y.createdAt || "";
    return ty.localeCompare(tx);
  });
  const items = sorted.map((s) => {
    const li = el("li", "session");
    li.dataset.sessionId = s.sessionId;
    li.tabIndex = 0;
    li.setAttribute("role", "button");
    if (state.open && state.open.sessionId === s.sessionId) li.setAttribute("aria-current", "true");
    li.append(el("span", "peer", s.peer.displayName || s.peer.email));
    const badge = el("span", "badge", String(s.unreadCount || 0));
    badge.hidden = !s.unreadCount;
    badge.setAttribute("aria-label", `${s.unreadCount || 0} unread`);
    li.append(badge);
    const last = s.lastMessage;
    const preview = last ? `${norm(last.senderEmail) === state.auth.email ? "You: " : ""}${last.content}` : "";
    li.append(el("span", "preview", preview.slice(0, 80)));
    li.append(el("span", "intent", s.intent));
    const p = presenceOf(s.peer.email);
    const presence = el("span", "presence", p.text);
    presence.dataset.state = p.state;
    li.append(presence);
    return li;
  });
  list.replaceChildren(...items);
  $("sessions-empty").hidden = items.length > 0;
}

// ---- the open conversation ---------------------------------------------------------------

async function openSession(sessionId) {
  const summary = state.sessions.get(sessionId);
  if (!summary) return;
  if (state.open && state.open.sessionId === sessionId) return;
  setTyping(false);
  hideTyping();
  const c = new Conversation(summary);
  state.open = c;
  live.follow(null);
  renderSessions();
  renderConversation();
  try {
    const page = await api.history(sessionId, { limit: PAGE_SIZE });
    if (state.open !== c) return;
    for (const m of page.messages) c.merge(m, "history");
    const newest = page.messages.length ? Math.max(...page.messages.map((m) => m.seq)) : 0;
    c.contiguous = Math.max(c.contiguous, newest);
    c.advance();
    c.olderPath = page.next;
    c.loaded = true;
    for (const m of c.messages.values()) if (isMine(m)) resolveOutbox(m);
    const lastPeer = c.lastPeerSeq();
    if (lastPeer) queueDelivered(sessionId, lastPeer);
    live.follow(sessionId); // resumes after c.contiguous: nothing between history and live is lost
    renderConversation({ toBottom: true });
    maybeMarkRead();
  } catch (err) {
    showAlert(`Could not load the conversation: ${describe(err)}`);
  }
}

function resolveOutbox(message) {
  if (state.outbox.delete(message.clientMessageId)) saveOutbox();
}

async function loadOlder() {
  const c = state.open;
  if (!c || !c.loaded || !c.olderPath || c.loadingOlder) return;
  c.loadingOlder = true;
  const scroller = $("messages-scroll");
  const fromBottom = scroller.scrollHeight - scroller.scrollTop;
  try {
    const page = await api.history(c.sessionId, { path: c.olderPath });
    if (state.open !== c) return;
    for (const m of page.messages) c.merge(m, "history");
    c.olderPath = page.next;
    renderConversation();
    scroller.scrollTop = scroller.scrollHeight - fromBottom;
  } catch (err) {
    showAlert(`Could not load older messages: ${describe(err)}`);
  } finally {
    c.loadingOlder = false;
  }
}

function atBottom() {
  const s = $("messages-scroll");
  return s.scrollHeight - s.scrollTop - s.clientHeight < 80;
}

function canSee() {
  return document.visibilityState === "visible" && atBottom();
}

function renderConversation({ toBottom = false } = {}) {
  const c = state.open;
  $("chat-placeholder").hidden = Boolean(c);
  $("chat-body").hidden = !c;
  if (!c) {
    $("messages").replaceChildren();
    return;
  }
  const stick = toBottom || atBottom();
  $("chat-title").textContent = c.summary.peer.displayName || c.summary.peer.email;
  $("chat-title").title = c.summary.peer.email;
  $("chat-intent").textContent = c.summary.intent;
  renderPresence();
  $("older").hidden = !c.olderPath;

  const items = [...c.messages.values()].sort((a, b) => a.seq - b.seq).map((m) => messageItem(c, m));
  const pending = [...state.outbox.values()]
    .filter((e) => e.sessionId === c.sessionId)
    .sort((a, b) => a.createdAt - b.createdAt)
    .map((e) => pendingItem(e));
  $("messages").replaceChildren(...items, ...pending);
  if (stick) {
    const s = $("messages-scroll");
    s.scrollTop = s.scrollHeight;
  }
}

function messageItem(c, m) {
  const mine = isMine(m);
  const li = el("li", mine ? "msg mine" : "msg");
  li.dataset.seq = String(m.seq);
  li.dataset.messageId = m.messageId;
  li.dataset.clientId = m.clientMessageId;
  li.dataset.via = m.via;
  li.append(el("div", "content", m.content));
  const meta = el("div", "meta");
  meta.append(el("span", "time", timeOf(m.sentAt)));
  if (mine) {
    const status = c.status(m);
    const badge = el("span", "status", status);
    badge.dataset.status = status;
    meta.append(badge);
  }
  li.append(meta);
  return li;
}

function pendingItem(entry) {
  const li = el("li", "msg mine pending");
  li.dataset.clientId = entry.clientMessageId;
  li.append(el("div", "content", entry.content));
  const meta = el("div", "meta");
  const status = el("span", "status", entry.state);
  status.dataset.status = entry.state;
  if (entry.error) status.title = entry.error;
  meta.append(status);
  if (entry.state === "failed") {
    if (entry.error) meta.append(el("span", "error", entry.error));
    const retry = el("button", "link retry", "retry");
    retry.type = "button";
    retry.addEventListener("click", () => {
      entry.state = "sending";
      entry.error = null;
      deliver(entry);
      renderConversation();
    });
    meta.append(retry);
  }
  li.append(meta);
  return li;
}

// ---- marks ---------------------------------------------------------------------------------

function maybeMarkRead() {
  const c = state.open;
  if (!c || !c.loaded || !canSee()) return;
  const upTo = c.contiguous;
  if (upTo <= c.readSent || c.lastPeerSeq() <= c.readSent) return;
  const before = c.readSent;
  c.readSent = upTo;
  const summary = state.sessions.get(c.sessionId);
  if (summary) summary.unreadCount = 0;
  renderSessions();
  api.markRead(c.sessionId, upTo).catch(() => {
    if (state.open === c && c.readSent === upTo) c.readSent = before; // try again on the next event
  });
}

function queueDelivered(sessionId, seq) {
  if (seq <= (state.delivered.get(sessionId) || 0)) return;
  state.delivered.set(sessionId, seq);
  state.pendingDelivered.set(sessionId, seq);
  clearTimeout(state.deliveredTimer);
  state.deliveredTimer = setTimeout(flushDelivered, 250);
}

function flushDelivered() {
  const pending = state.pendingDelivered;
  state.pendingDelivered = new Map();
  for (const [sessionId, seq] of pending) {
    const c = state.open;
    if (c && c.sessionId === sessionId && c.readSent >= seq) continue; // read covers it
    api.markDelivered(sessionId, seq).catch(() => {
      if (state.delivered.get(sessionId) === seq) state.delivered.delete(sessionId);
    });
  }
}

// ---- sending -------------------------------------------------------------------------------

function outboxKey() {
  return `chat.outbox.${state.auth.email}`;
}

function saveOutbox() {
  if (!state.auth) return;
  const kept = [...state.outbox.values()].map(({ clientMessageId, sessionId, content, state: s, error, createdAt }) => ({
    clientMessageId, sessionId, content, state: s, error, createdAt,
  }));
  sessionStorage.setItem(outboxKey(), JSON.stringify(kept));
}

function restoreOutbox() {
  state.outbox.clear();
  let saved = [];
  try {
    saved = JSON.parse(sessionStorage.getItem(outboxKey()) || "[]");
  } catch {
    saved = [];
  }
  for (const e of saved) {
    if (e.state === "sent" && Date.now() - e.createdAt > SENT_KEEP_MS) continue;
    // A send cut short by a reload goes again with the same id: the server de-duplicates it.
    state.outbox.set(e.clientMessageId, { ...e, attempts: 0 });
  }
  for (const e of state.outbox.values()) if (e.state === "sending") deliver(e);
}

function queueSend(sessionId, content) {
  const entry = {
    clientMessageId: uuid4(),
    sessionId,
    content,
    state: "sending",
    error: null,
    createdAt: Date.now(),
    attempts: 0,
  };
  state.outbox.set(entry.clientMessageId, entry);
  saveOutbox();
  deliver(entry);
  return entry;
}

async function deliver(entry) {
  if (entry.inflight || entry.state !== "sending" || !state.outbox.has(entry.clientMessageId)) return;
  entry.inflight = true;
  entry.attempts += 1;
  clearTimeout(entry.retryTimer);
  try {
    if (live.connected) {
      try {
        await live.send(entry.sessionId, entry.content, entry.clientMessageId);
        entry.state = "sent"; // committed; the message itself arrives on the topic or ack queue
        return;
      } catch (err) {
        if (!(err instanceof LiveError)) throw err;
        // Not sent, or no receipt in time: the same clientMessageId over REST is safe.
      }
    }
    const message = await api.send(entry.sessionId, entry.content, entry.clientMessageId);
    acceptMessage(message, "rest");
  } catch (err) {
    if (err instanceof ApiError && !err.transient) {
      entry.state = "failed";
      entry.error = err.detail;
    } else {
      const wait = err instanceof ApiError && err.retryAfter
        ? err.retryAfter * 1000
        : Math.min(30000, 1000 * 2 ** Math.min(entry.attempts, 5));
      entry.retryTimer = setTimeout(() => deliver(entry), wait);
    }
  } finally {
    entry.inflight = false;
    saveOutbox();
    renderConversation();
  }
}

function setTyping(on) {
  const t = state.typingOut;
  const c = state.open;
  clearTimeout(t.idleTimer);
  if (!c) {
    t.on = false;
    return;
  }
  const now = Date.now();
  if (on) {
    if (!t.on || now - t.lastSent > TYPING_REFRESH_MS) {
      live.typing(c.sessionId, true);
      t.lastSent = now;
    }
    t.on = true;
    t.idleTimer = setTimeout(() => setTyping(false), TYPING_IDLE_MS);
  } else if (t.on) {
    live.typing(c.sessionId, false);
    t.on = false;
  }
}

// ---- wiring --------------------------------------------------------------------------------

function wire() {
  $("signin-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const button = event.submitter || event.target.querySelector("button");
    button.disabled = true;
    try {
      const token = $("signin-token").value.trim() || null;
      const email = norm($("signin-email").value);
      if (!token && !email) throw new Error("enter your email");
      await signIn(email, token);
    } catch (err) {
      showAlert(`Sign-in failed: ${describe(err)}`);
    } finally {
      button.disabled = false;
    }
  });

  $("signout").addEventListener("click", () => signOut());

  $("start-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const toEmail = norm($("start-email").value);
    const intent = $("start-intent").value.trim();
    try {
      const view = await api.init(toEmail, intent);
      if (!state.sessions.has(view.sessionId)) {
        state.sessions.set(view.sessionId, summaryFromInit(view));
      }
      renderSessions();
      $("start-email").value = "";
      await openSession(view.sessionId);
      scheduleRefresh(0);
    } catch (err) {
      showAlert(`Could not start the chat: ${describe(err)}`);
    }
  });

  $("sessions").addEventListener("click", (event) => {
    const item = event.target.closest("li.session");
    if (item) openSession(item.dataset.sessionId);
  });
  $("sessions").addEventListener("keydown", (event) => {
    const item = event.target.closest("li.session");
    if (item && (event.key === "Enter" || event.key === " ")) {
      event.preventDefault();
      openSession(item.dataset.sessionId);
    }
  });

  $("older").addEventListener("click", () => loadOlder());
  $("messages-scroll").addEventListener("scroll", () => {
    if ($("messages-scroll").scrollTop < 60) loadOlder();
    maybeMarkRead();
  });

  const input = $("composer-input");
  input.addEventListener("input", () => setTyping(input.value.length > 0));
  input.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      $("composer").requestSubmit();
    }
  });
  $("composer").addEventListener("submit", (event) => {
    event.preventDefault();
    const c = state.open;
    const content = input.value;
    if (!c || !content.trim()) return;
    if (encoder.encode(content).length > MAX_CONTENT_BYTES) {
      showAlert(`A message holds at most ${MAX_CONTENT_BYTES} bytes.`);
      return;
    }
    input.value = "";
    setTyping(false);
    queueSend(c.sessionId, content);
    renderConversation({ toBottom: true });
  });

  document.addEventListener("visibilitychange", () => maybeMarkRead());
  setInterval(() => poll(), POLL_MS);
}

function boot() {
  wire();
  setConnection("offline");
  let saved = null;
  try {
    saved = JSON.parse(sessionStorage.getItem(AUTH_KEY) || "null");
  } catch {
    saved = null;
  }
  if (saved && saved.token && !expired(saved)) {
    start(saved).catch((err) => showAlert(describe(err)));
  } else {
    $("signin-view").hidden = false;
  }
}

boot();
