// The chat web client: sign in, session list with unread badges, one open conversation with
// history, live messages, receipts and typing, edits and deletes of my messages. REST for reads
// and marks, STOMP for live events, sends and changes (REST when the socket is down).
// Everything user-provided goes in via textContent. End-to-end encryption (keys, envelopes,
// the bar over the conversation) is encryption.js's; blocking block.js's; chats closed by an
// account's deletion, and this account's own deletion, closed.js's.

import { Api, ApiError } from "./api.js";
import { el } from "./dom.js";
import { Encryption } from "./encryption.js";
import { Live, LiveError, LiveRefusal } from "./live.js";
import { Blocking, blockOf } from "./block.js";
import { Closing, DELETED_NAME, isClosed } from "./closed.js";

const AUTH_KEY = "chat.auth";
const PAGE_SIZE = 50;
const POLL_MS = 4000; // catch-up over REST while the socket is down
const TYPING_IDLE_MS = 3000; // we stop "typing" after this long without a key
const TYPING_REFRESH_MS = 3000; // ... and repeat "typing" this often while typing
const TYPING_SHOW_MS = 6000; // the peer's indicator fades if not refreshed
const MAX_CONTENT_BYTES = 4096;
const SENT_KEEP_MS = 5 * 60 * 1000; // a committed send waits this long for its message
// A `closed` frame on a topic: the list is read this much later, when a deleted user's own page
// has had its ERROR USER_DELETED (and asks nothing more); the peer's page has the event on its
// queue by then.
const CLOSED_TOPIC_CHECK_MS = 1500;

const $ = (id) => document.getElementById(id);
const encoder = new TextEncoder();

// ---- state -------------------------------------------------------------------------------

const state = {
  auth: null, // {token, email, exp}
  sessions: new Map(), // sessionId -> summary (+ maxSeq)
  open: null, // Conversation
  outbox: new Map(), // clientMessageId -> pending send
  changing: new Map(), // messageId -> the edit or delete of it being made, or refused
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
  (error) =>
    error.code === "USER_DELETED"
      ? accountDeleted()
      : signOut("Your sign-in expired or was refused; sign in again."),
);

const encryption = new Encryption({ api, onChange: () => scheduleRender() });

const live = new Live({
  token: () => (state.auth && !expired(state.auth) ? state.auth.token : null),
  onState: (s) => setConnection(s),
  onEvent: (event, body, headers) => onEvent(event, body, headers),
  onConnected: () => onConnected(),
  resumeAfter: (sessionId) =>
    state.open && state.open.sessionId === sessionId ? state.open.contiguous : 0,
  onError: (message) => showAlert(`Live connection: ${message}`),
  onAccountDeleted: () => accountDeleted(),
});

const blocking = new Blocking({
  api,
  me: () => state.auth && state.auth.email,
  onState: (sessionId, blockedBy) => setBlocked(sessionId, blockedBy),
  onSettled: () => followOpen(),
  onError: (message) => showAlert(message),
  refresh: () => scheduleRefresh(0),
});

const closing = new Closing();

class Conversation {
  constructor(summary) {
    this.sessionId = summary.sessionId;
    this.summary = summary;
    this.messages = new Map(); // seq -> message view (+ via, changeSeq)
    this.ids = new Map(); // messageId -> seq
    // Edits and deletes: each has a seq of its own in the session's order, shared with the
    // messages, so the seqs held (for the resume and for marks) are messages' and changes'.
    this.changes = new Set(); // seq of each change held
    this.latest = new Map(); // messageId -> the newest change seen (for a message not held yet)
    this.contiguous = 0; // every seq from the loaded ones up to this one is held
    this.olderPath = null; // Link rel="next" of the last older page
    this.loaded = false;
    this.loadingOlder = false;
    this.peerRead = 0;
    this.peerDelivered = 0;
    // Our read mark as far as we know: nothing unread means read up to the last message.
    this.readSent = summary.unreadCount ? 0 : summary.maxSeq || 0;
  }

  /**
   * Adds or refreshes a message (from history, a poll, a resume: its current state); false
   * when it changed nothing (a duplicate).
   */
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
      changed = takeState(known, message) || changed;
      if (message.senderEmail !== known.senderEmail) {
        // Its sender's account was deleted: a placeholder sent it now (a tombstone).
        const { senderEmail, senderDisplayName, senderId } = message;
        Object.assign(known, { senderEmail, senderDisplayName, senderId });
        changed = true;
      }
      this.noteFlags(known);
      return changed;
    }
    if (this.ids.has(message.messageId)) return false;
    const view = { ...message, via, changeSeq: 0 };
    this.messages.set(message.seq, view);
    this.ids.set(message.messageId, message.seq);
    const latest = this.latest.get(message.messageId);
    if (latest) applyChange(view, latest); // a change that came before its message did
    this.noteFlags(message);
    this.advance();
    return true;
  }

  /** Takes an edit or a delete (MessageChange); false when it changed nothing (a duplicate). */
  mergeChange(change) {
    if (this.changes.has(change.seq) || this.messages.has(change.seq)) return false;
    this.changes.add(change.seq);
    const before = this.contiguous;
    this.advance();
    // The newest change of each message, kept for a message loaded later (an older page):
    // a delete is final, edits follow their seqs.
    const latest = this.latest.get(change.messageId);
    const newer = !latest || change.change === "delete" || change.seq > latest.seq;
    if (newer && !(latest && latest.change === "delete")) this.latest.set(change.messageId, change);
    const message = this.byId(change.messageId);
    const changed = message ? applyChange(message, change) : false;
    return changed || this.contiguous !== before;
  }

  byId(messageId) {
    const seq = this.ids.get(messageId);
    return seq === undefined ? null : this.messages.get(seq);
  }

  noteFlags(message) {
    if (!isMine(message)) return;
    if (message.seen) this.peerRead = Math.max(this.peerRead, message.seq);
    if (message.seen || message.delivered) {
      this.peerDelivered = Math.max(this.peerDelivered, message.seq);
    }
  }

  advance() {
    const held = (seq) => this.messages.has(seq) || this.changes.has(seq);
    while (held(this.contiguous + 1)) this.contiguous += 1;
  }

  /** Highest seq of a peer message held (changes are not messages: nothing to read). */
  lastPeerSeq() {
    let last = 0;
    for (const m of this.messages.values()) if (!isMine(m) && !m.deleted && m.seq > last) last = m.seq;
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

/** Microseconds since the epoch of an ISO-8601 time (the server's carry microseconds). */
function instant(iso) {
  if (!iso) return 0;
  const fraction = /\.(\d+)/.exec(iso);
  const ms = Date.parse(iso.replace(/\.\d+/, ""));
  if (Number.isNaN(ms)) return 0;
  return ms * 1000 + (fraction ? Number(fraction[1].slice(0, 6).padEnd(6, "0")) : 0);
}

/**
 * Takes the state of a message as the server holds it now (history, poll, resume) into the
 * one held: a tombstone stays one, a later edit replaces the text. False when nothing changed.
 */
function takeState(known, message) {
  if (known.deleted) return false;
  if (message.deleted) {
    Object.assign(known, { deleted: true, deletedAt: message.deletedAt, content: "", encrypted: null });
    return true;
  }
  if (message.editedAt && instant(message.editedAt) > instant(known.editedAt)) {
    Object.assign(known, { content: message.content, encrypted: message.encrypted || null, editedAt: message.editedAt });
    return true;
  }
  return false;
}

/** Applies an edit or delete (MessageChange) to the message it names; false when stale. */
function applyChange(message, change) {
  if (message.deleted) return false; // a delete is final
  if (change.change === "delete") {
    Object.assign(message, { deleted: true, deletedAt: change.changedAt, content: "", encrypted: null, changeSeq: change.seq });
    return true;
  }
  if (change.change !== "edit" || change.seq <= message.changeSeq) return false;
  // Older than the text held (history already had a later edit), or replayed after a delete
  // (its text erased: the delete follows it).
  if (instant(change.changedAt) < instant(message.editedAt) || !(change.content || change.encrypted)) return false;
  Object.assign(message, {
    content: change.content,
    encrypted: change.encrypted || null,
    editedAt: change.changedAt,
    changeSeq: change.seq,
  });
  return true;
}

function expired(auth) {
  return auth.exp !== undefined && Date.now() / 1000 >= auth.exp;
}

const norm = (email) => String(email || "").trim().toLowerCase();
const isMine = (message) => state.auth !== null && norm(message.senderEmail) === state.auth.email;

/**
 * The text to show of a message: its `content`, or its envelope decrypted ({encrypted: true,
 * state: "ok" | "pending" | "failed", text}; a failure's text says why).
 */
function shown(message) {
  if (!message.encrypted) return { encrypted: false, state: "ok", text: message.content };
  return { encrypted: true, ...encryption.text(message.encrypted, message.sessionId) };
}

let renderQueued = false;
/** Draws again once, soon (texts decrypted, keys loaded). */
function scheduleRender() {
  if (renderQueued) return;
  renderQueued = true;
  setTimeout(() => {
    renderQueued = false;
    if (!state.auth) return;
    renderSessions();
    renderConversation();
  }, 0);
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
  closing.clearNotice();
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
  encryption.start(auth.email);
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
  state.changing.clear();
  state.delivered.clear();
  state.open = null;
  encryption.stop();
  $("account").hidden = true;
  $("chat-view").hidden = true;
  $("signin-view").hidden = false;
  renderSessions();
  renderConversation();
  if (message) showAlert(message);
}

/**
 * This account was deleted (the live connection's ERROR USER_DELETED, or an API answer with
 * that code): signed out for good, no reconnect, and the sign-in view says why. What this
 * browser kept for the account goes too: its key pair and the peers' keys last seen, its
 * encryption preferences.
 */
function accountDeleted() {
  if (!state.auth) return;
  const email = state.auth.email;
  signOut(null);
  $("alert").hidden = true; // (an alert of the moment before says less than the notice)
  $("signin-email").value = "";
  closing.showDeleted(email);
  encryption.forget(email).catch(() => {}); // (no IndexedDB: nothing was kept)
}

// ---- connection ----------------------------------------------------------------------------

function setConnection(s) {
  state.connection = s;
  const pill = $("conn-status");
  pill.dataset.state = s;
  // What carries the live connection: a plain WebSocket, or SockJS (and which of its
  // transports) where WebSockets do not pass.
  const via = live.transport === "sockjs" ? live.sockjsTransport : null;
  pill.dataset.transport = live.transport;
  pill.dataset.sockjsTransport = via || "";
  pill.textContent = s === "live" && live.transport === "sockjs" ? "live (SockJS)" : s;
  pill.title =
    live.transport === "sockjs"
      ? `connection: ${s}, over SockJS${via ? ` (${via})` : ""}`
      : `connection: ${s}, over WebSocket`;
}

function onConnected() {
  // Whatever happened while we were away: badges from the list, the open session from the
  // topic's resume, and sends that never got their receipt go again (same clientMessageId).
  scheduleRefresh(0);
  encryption.refresh(); // key changes may have been missed
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
    // What came after the seqs held (messages, edits, deletes), oldest pages first, then the
    // receipts of the newest messages.
    for (let pages = 0; pages < 20; pages++) {
      const page = await api.events(c.sessionId, { after: c.contiguous, limit: 100 });
      if (state.open !== c) return;
      for (const e of page.events) acceptEvent(e, "poll");
      if (!page.next || page.events.length === 0) break;
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

function onEvent(event, body, headers = {}) {
  switch (event) {
    case "message":
    case "ack":
    case "edit":
    case "delete":
      // A change says so in its body (`change`), also on the ack queue and in a resume.
      if (body && body.change && body.messageId && body.sessionId) acceptChange(body, "live");
      else if (body && body.messageId && body.sessionId) acceptMessage(body, "live");
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
    case "block":
    case "unblock":
      if (body && body.sessionId && Array.isArray(body.blockedBy)) {
        if (event === "unblock") blocking.settled(body.sessionId); // the edges know now
        setBlocked(body.sessionId, body.blockedBy);
      }
      break;
    case "blocked":
      scheduleRefresh(0); // the topic's SUBSCRIBE was refused: who blocks, the list says
      break;
    case "closed":
      if (!body || !body.sessionId || body.state !== "CLOSED") break;
      if (String(headers.destination || "").startsWith("/topic/")) {
        // The end of the topic's subscription. Every subscriber gets it, the deleted user's
        // own page too (its ERROR USER_DELETED follows): the list says which side this is.
        setTimeout(() => state.auth && scheduleRefresh(0), CLOSED_TOPIC_CHECK_MS);
      } else {
        // On /user/queue/messages: the peer's account was deleted (this page is the peer's);
        // or the topic's SUBSCRIBE was refused, closed.
        setClosed(body.sessionId, body.reason);
      }
      break;
    case "keys":
      encryption.onKeyEvent(body);
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

/** One entry of GET /events: a message in its current state, or an edit or delete of one. */
function acceptEvent(event, via) {
  if (event.message) acceptMessage(event.message, via);
  else if (event.change) acceptChange(event.change, via);
}

/** An edit or delete of a message (live, REST answer, poll): de-duplicated by its seq. */
function acceptChange(change, via) {
  const summary = state.sessions.get(change.sessionId);
  if (!summary) {
    scheduleRefresh(200);
  } else {
    const last = summary.lastMessage;
    if (last && last.messageId === change.messageId && !last.deleted) {
      if (change.change === "delete") {
        summary.lastMessage = { ...last, content: "", deleted: true };
      } else if ((change.content || change.encrypted) && instant(change.changedAt) >= instant(last.editedAt)) {
        summary.lastMessage = { ...last, content: change.content, encrypted: change.encrypted || null, editedAt: change.changedAt };
      }
    }
    const viewing = state.open && state.open.sessionId === change.sessionId && canSee();
    // A deleted message the peer sent no longer counts as unread: the server's count is exact.
    if (change.change === "delete" && !isMine(change) && !viewing && summary.unreadCount) {
      scheduleRefresh(300);
    }
  }
  const c = state.open;
  if (c && c.sessionId === change.sessionId && c.mergeChange(change)) {
    const message = c.byId(change.messageId);
    const pending = state.changing.get(change.messageId);
    // Deleted (here or on another device): nothing left to edit.
    if (message && message.deleted && pending && pending.state !== "saving") {
      state.changing.delete(change.messageId);
    }
    renderConversation();
    maybeMarkRead();
  }
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
  if (!c || !event || event.sessionId !== c.sessionId || isBlocked(c.summary) || isClosed(c.summary)) return;
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
  // Blocked meanwhile (who blocks, the session list says), or closed (the list says so too).
  const blocked = Boolean(error && (error.code === "SESSION_BLOCKED" || error.code === "SESSION_CLOSED"));
  if (blocked) scheduleRefresh(0);
  const entry = error && error.clientMessageId ? state.outbox.get(error.clientMessageId) : null;
  if (entry) {
    entry.state = "failed";
    entry.error = error.detail || error.code;
    saveOutbox();
    renderConversation();
  } else if (error && !blocked) {
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
  const asOf = blocking.mark();
  const list = await api.sessions();
  const seen = new Set();
  const closedNow = [];
  for (const s of list) {
    seen.add(s.sessionId);
    const summary = { ...s, blockedBy: s.blockedBy || [], maxSeq: s.lastMessage ? s.lastMessage.seq : 0 };
    // A block or an unblock heard of while the list was on its way is newer than the list.
    const held = state.sessions.get(s.sessionId);
    if (held && blocking.newerThan(s.sessionId, asOf)) summary.blockedBy = held.blockedBy;
    // A chat never opens again: a list read before its `closed` event came is older.
    if (isClosed(held) && !isClosed(summary)) {
      Object.assign(summary, { state: held.state, closedReason: held.closedReason, peer: held.peer });
    }
    if (held && !isClosed(held) && isClosed(summary)) {
      closing.remember(held); // closed while the page was away (the event missed)
      closedNow.push(s.sessionId);
    }
    if (state.open && state.open.sessionId === s.sessionId && canSee()) summary.unreadCount = 0;
    state.sessions.set(s.sessionId, summary);
    if (state.open && state.open.sessionId === s.sessionId) state.open.summary = summary;
  }
  for (const id of [...state.sessions.keys()]) if (!seen.has(id)) state.sessions.delete(id);
  renderSessions();
  showBlock();
  for (const sessionId of closedNow) afterClose(sessionId);
  loadPresence().catch(() => {}); // unknown until a change arrives (503 without Redis)
}

// ---- chats closed for good (closed.js draws them) -------------------------------------------

/**
 * The peer's account was deleted: the chat is closed for good (from the `closed` event, or a
 * topic SUBSCRIBE refused with SESSION_CLOSED). The peer is a placeholder from now on; the
 * session list brings the server's.
 */
function setClosed(sessionId, reason) {
  const summary = state.sessions.get(sessionId);
  if (!summary) {
    scheduleRefresh(200);
    return;
  }
  if (isClosed(summary)) return; // heard of already (the topic and the queue both say it)
  closing.remember(summary);
  Object.assign(summary, {
    state: "CLOSED",
    closedReason: reason || null,
    peer: { ...summary.peer, displayName: DELETED_NAME },
  });
  afterClose(sessionId);
  scheduleRefresh(0); // the placeholder, the last message (a tombstone now), the unread count
}

/**
 * What follows a chat's closing: the page shows it, and if it is the open chat, leaves its
 * topic, shuts the composer and the block control, stops typing, closes editors and the
 * encryption bar, and reads the messages it holds again (the peer's are tombstones now).
 */
function afterClose(sessionId) {
  renderSessions();
  const c = state.open;
  if (!c || c.sessionId !== sessionId) return;
  for (const [id, entry] of state.changing) {
    if (entry.sessionId === sessionId && entry.state !== "saving") state.changing.delete(id);
  }
  encryption.open(c.summary);
  showBlock();
  renderConversation();
  if (c.loaded) rereadHeld(c).catch(() => {}); // (offline: the poll reads the newest page)
}

/** Reads again the history pages that cover the messages held, newest first. */
async function rereadHeld(c) {
  const oldest = Math.min(...c.messages.keys());
  let page = await api.history(c.sessionId, { limit: 200 });
  for (let pages = 0; pages < 50 && state.open === c; pages++) {
    for (const m of page.messages) c.merge(m, "history");
    renderConversation();
    if (!page.next || !page.messages.length || page.messages.some((m) => m.seq <= oldest)) break;
    page = await api.history(c.sessionId, { path: page.next });
  }
}

// ---- blocking (block.js draws it) ------------------------------------------------------------

const isBlocked = (summary) => blockOf(summary, state.auth && state.auth.email).blocked;

/** A session's new block state: from a `block` / `unblock` event, or my own request's answer. */
function setBlocked(sessionId, blockedBy) {
  blocking.note(sessionId);
  const summary = state.sessions.get(sessionId);
  if (!summary) {
    scheduleRefresh(200);
    return;
  }
  summary.blockedBy = [...blockedBy];
  renderSessions();
  showBlock();
  loadPresence().catch(() => {}); // a blocked peer's presence stops; an unblocked one's is back
}

/** The open chat's block (or closed) state on the page, and its topic followed or left. */
function showBlock() {
  const c = state.open;
  blocking.render(c ? c.summary : null);
  closing.render(c ? c.summary : null);
  renderPresence();
  followOpen();
}

/**
 * Follows the open chat's topic unless it is blocked: a SUBSCRIBE to a blocked session is
 * refused and closes the connection, and its subscription ends with the `block` event. Typing
 * stops both ways (the server refuses it too). Back on the unblock, resuming after the seqs held.
 */
function followOpen() {
  const c = state.open;
  if (!c || !c.loaded) return;
  if (isBlocked(c.summary) || isClosed(c.summary)) {
    live.follow(null);
    hideTyping();
    clearTimeout(state.typingOut.idleTimer);
    state.typingOut.on = false;
  } else if (!blocking.unsettled(c.sessionId)) {
    live.follow(c.sessionId);
  }
}

// ---- presence of the peers ----------------------------------------------------------------

async function loadPresence() {
  // Not the peers of blocked chats alone: the server shows no presence between them. Nor
  // the placeholders of closed ones: no one is there.
  const open = [...state.sessions.values()].filter((s) => !isBlocked(s) && !isClosed(s));
  const emails = [...new Set(open.map((s) => norm(s.peer.email)))];
  for (let i = 0; i < emails.length; i += 100) setPresence(await api.presence(emails.slice(i, i + 100)));
}

function setPresence(states) {
  for (const p of states) state.presence.set(norm(p.email), { online: p.online, lastSeen: p.lastSeen });
  renderSessions();
  renderPresence();
}

/** "online", "last seen 14:05" (or a date when not today), or "" when not known or blocked. */
function presenceOf(summary) {
  const p = isBlocked(summary) || isClosed(summary) ? null : state.presence.get(norm(summary.peer.email));
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
  const p = c ? presenceOf(c.summary) : { state: "unknown", text: "" };
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
    blockedBy: view.blockedBy || [],
    state: view.state || "OPEN",
    closedReason: view.closedReason || null,
    maxSeq: 0,
  };
}

/**
 * A last message as the list shows it: an encrypted one decrypted when the page can (the
 * list itself carries no envelope, only `encrypted: true`).
 */
function previewOf(last, sessionId) {
  if (!last.encrypted) return last.content;
  const envelope = typeof last.encrypted === "object" ? last.encrypted : encryption.previewEnvelope(sessionId, last);
  const text = envelope ? shown({ ...last, sessionId, encrypted: envelope }) : null;
  return text && text.state === "ok" ? text.text : "encrypted message";
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
    const who = last && norm(last.senderEmail) === state.auth.email ? "You: " : "";
    const preview = !last ? "" : last.deleted ? `${who}message deleted` : `${who}${previewOf(last, s.sessionId)}`;
    const previewNode = el("span", "preview", preview.slice(0, 80));
    if (last && last.deleted) previewNode.classList.add("deleted");
    else if (last && last.encrypted) previewNode.classList.add("encrypted"); // a lock before it
    li.append(previewNode);
    li.append(el("span", "intent", s.intent));
    const p = presenceOf(s);
    const presence = el("span", "presence", p.text);
    presence.dataset.state = p.state;
    li.append(presence);
    const blocked = blocking.marker(s);
    if (blocked) li.append(blocked);
    const closed = closing.marker(s);
    if (closed) li.append(closed);
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
  for (const [id, entry] of state.changing) if (entry.state !== "saving") state.changing.delete(id);
  const c = new Conversation(summary);
  state.open = c;
  encryption.open(summary);
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
    followOpen(); // resumes after c.contiguous: nothing between history and live is lost
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
  blocking.render(c ? c.summary : null);
  closing.render(c ? c.summary : null);
  if (!c) {
    $("messages").replaceChildren();
    return;
  }
  const stick = toBottom || atBottom();
  $("chat-title").textContent = c.summary.peer.displayName || c.summary.peer.email;
  $("chat-title").title = isClosed(c.summary) ? "" : c.summary.peer.email; // (a placeholder's says nothing)
  $("chat-intent").textContent = c.summary.intent;
  renderPresence();
  $("older").hidden = !c.olderPath;

  const items = [...c.messages.values()].sort((a, b) => a.seq - b.seq).map((m) => messageItem(c, m));
  const pending = [...state.outbox.values()]
    .filter((e) => e.sessionId === c.sessionId)
    .sort((a, b) => a.createdAt - b.createdAt)
    .map((e) => pendingItem(e));
  // The list is drawn anew: what had the focus (an editor, a button) gets it back.
  const focused = document.activeElement && document.activeElement.closest("#messages [data-focus]");
  const focusKey = focused ? focused.dataset.focus : null;
  const selection = focused && focused.tagName === "TEXTAREA" ? [focused.selectionStart, focused.selectionEnd] : null;
  $("messages").replaceChildren(...items, ...pending);
  if (focusKey) {
    const again = [...$("messages").querySelectorAll("[data-focus]")].find((n) => n.dataset.focus === focusKey);
    if (again) {
      again.focus({ preventScroll: true });
      if (selection) again.setSelectionRange(...selection);
    }
  }
  if (stick) {
    const s = $("messages-scroll");
    s.scrollTop = s.scrollHeight;
  }
}

function fullTime(iso) {
  const date = new Date(iso);
  return Number.isNaN(date.getTime()) ? "" : date.toLocaleString();
}

function button(className, text, action, messageId, label) {
  const node = el("button", className, text);
  node.type = "button";
  node.dataset.action = action;
  node.dataset.focus = `${messageId}:${action}`;
  if (label) node.setAttribute("aria-label", label);
  return node;
}

function messageItem(c, m) {
  const mine = isMine(m);
  const li = el("li", mine ? "msg mine" : "msg");
  li.dataset.seq = String(m.seq);
  li.dataset.messageId = m.messageId;
  li.dataset.clientId = m.clientMessageId;
  li.dataset.via = m.via;
  li.dataset.sender = m.senderDisplayName || "";
  const change = state.changing.get(m.messageId);
  if (m.deleted) {
    // A tombstone: the text is gone for everyone; the message keeps its place.
    li.classList.add("deleted");
    li.dataset.deleted = "true";
    const tombstone = el("div", "content tombstone", "message deleted");
    if (m.deletedAt) tombstone.title = `deleted ${fullTime(m.deletedAt)}`;
    li.append(tombstone);
  } else if (change && change.mode === "edit") {
    li.append(editorForm(m, change));
  } else {
    const text = shown(m);
    const content = el("div", "content", text.state === "pending" ? "decrypting…" : text.text);
    if (text.state !== "ok") content.classList.add(text.state === "pending" ? "decrypting" : "undecryptable");
    li.append(content);
  }
  const meta = el("div", "meta");
  meta.append(el("span", "time", timeOf(m.sentAt)));
  if (!m.deleted) meta.append(...encryptionMark(li, m.encrypted, m));
  if (m.editedAt && !m.deleted) {
    const edited = el("span", "edited", "edited");
    edited.title = `edited ${fullTime(m.editedAt)}`;
    meta.append(edited);
  }
  if (mine && !m.deleted) {
    const editable = !m.encrypted || shown(m).state === "ok"; // the text is needed to edit it
    const status = c.status(m);
    const badge = el("span", "status", status);
    badge.dataset.status = status;
    meta.append(badge);
    if ((!change || change.mode === "error") && editable) {
      meta.append(button("link action edit", "Edit", "edit", m.messageId, "Edit message"));
      meta.append(button("link action delete", "Delete", "delete", m.messageId, "Delete message for everyone"));
    }
  }
  li.append(meta);
  if (change && change.mode === "confirm" && !m.deleted) li.append(confirmBox(m, change));
  if (change && change.state === "saving" && change.mode !== "edit") {
    li.append(el("p", "change-status", change.kind === "delete" ? "deleting…" : "saving…"));
  }
  if (change && change.error) {
    const error = el("p", "change-error", change.error);
    error.setAttribute("role", "alert");
    error.dataset.code = change.code || "";
    if (change.mode === "error") {
      error.append(button("link dismiss", "Dismiss", "dismiss", m.messageId, "Dismiss this error"));
    }
    li.append(error);
  }
  return li;
}

/** The inline editor of one of my messages: Enter saves, Escape cancels. */
function editorForm(m, change) {
  const form = el("form", "editor");
  form.dataset.messageId = m.messageId;
  const id = `edit-${m.messageId}`;
  const label = el("label", "visually-hidden", "Edit message");
  label.htmlFor = id;
  const input = el("textarea", "editor-input");
  input.id = id;
  input.rows = 2;
  input.maxLength = MAX_CONTENT_BYTES;
  input.value = change.draft;
  input.dataset.focus = `${m.messageId}:editor`;
  input.readOnly = change.state === "saving"; // (a disabled one would lose the focus)
  const save = el("button", "save", change.state === "saving" ? "Saving…" : "Save");
  save.type = "submit";
  save.disabled = change.state === "saving";
  save.dataset.focus = `${m.messageId}:save`;
  const cancel = button("link cancel", "Cancel", "cancel", m.messageId, "Cancel the edit");
  cancel.disabled = change.state === "saving";
  const buttons = el("div", "editor-buttons");
  buttons.append(save, cancel);
  form.append(label, input, buttons);
  return form;
}

/** "Delete for everyone?" with its two answers. */
function confirmBox(m, change) {
  const box = el("div", "confirm");
  box.setAttribute("role", "group");
  box.setAttribute("aria-label", "Confirm delete");
  box.append(el("span", "confirm-question", "Delete this message for everyone?"));
  const yes = button("danger confirm-delete", "Delete for everyone", "confirm-delete", m.messageId);
  const no = button("link cancel", "Cancel", "cancel", m.messageId, "Cancel, keep the message");
  yes.disabled = no.disabled = change.state === "saving";
  box.append(yes, no);
  return box;
}

/**
 * The mark of an encrypted message ("encrypted", a lock), or, in a chat where encryption is
 * on or used, of one that is not; sets `data-encrypted` on the item.
 */
function encryptionMark(li, envelope, message) {
  li.dataset.encrypted = envelope ? "true" : "false";
  const sessionId = state.open && state.open.sessionId;
  if (!envelope) {
    const relevant = sessionId && (encryption.enabledFor(sessionId) || [...state.open.messages.values()].some((x) => x.encrypted));
    if (!relevant) return [];
    const plain = el("span", "e2ee-mark plain", "not encrypted");
    plain.title = "This message was sent without end-to-end encryption: the server can read it";
    return [plain];
  }
  const mark = el("span", "e2ee-mark", "encrypted");
  mark.title = "End-to-end encrypted";
  if (message && !encryption.senderKeyKnown(envelope, message.senderEmail, message.sessionId)) {
    mark.classList.add("unknown-key");
    mark.title = `End-to-end encrypted, from a key (${envelope.senderKeyId}) that is not one of the sender's current keys`;
  }
  return [mark];
}

function pendingItem(entry) {
  const li = el("li", "msg mine pending");
  li.dataset.clientId = entry.clientMessageId;
  li.append(el("div", "content", entry.content));
  const meta = el("div", "meta");
  meta.append(...encryptionMark(li, entry.encrypted || null, null));
  const status = el("span", "status", entry.state);
  status.dataset.status = entry.state;
  if (entry.error) status.title = entry.error;
  meta.append(status);
  if (entry.state === "failed") {
    if (entry.error) meta.append(el("span", "error", entry.error));
  }
  if (entry.state === "failed" && !isClosed(state.sessions.get(entry.sessionId))) {
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
  const kept = [...state.outbox.values()].map(({ clientMessageId, sessionId, content, encrypted, state: s, error, createdAt }) => ({
    clientMessageId, sessionId, content, encrypted, state: s, error, createdAt,
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

/**
 * A message to send, encrypted first where the chat's encryption is on (once: every retry
 * sends the same envelope with the same clientMessageId). Sends go one after another, in the
 * order written, whatever the time each takes to encrypt.
 */
let sending = Promise.resolve();
function send(sessionId, content) {
  sending = sending.then(async () => {
    let encrypted = null;
    await encryption.ready(sessionId);
    if (encryption.enabledFor(sessionId)) {
      try {
        encrypted = await encryption.seal(sessionId, content);
      } catch (err) {
        showAlert(`Not sent: it could not be encrypted (${describe(err)}).`);
        if (!$("composer-input").value) $("composer-input").value = content;
        return;
      }
    }
    if (!state.auth) return;
    queueSend(sessionId, content, encrypted);
    renderConversation({ toBottom: true });
  }).catch((err) => showAlert(`Not sent: ${describe(err)}`)); // the next send still goes
}

function queueSend(sessionId, content, encrypted = null) {
  const entry = {
    clientMessageId: uuid4(),
    sessionId,
    content,
    encrypted,
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
        await live.send(entry.sessionId, entry.content, entry.clientMessageId, entry.encrypted);
        entry.state = "sent"; // committed; the message itself arrives on the topic or ack queue
        return;
      } catch (err) {
        if (!(err instanceof LiveError)) throw err;
        // Not sent, or no receipt in time: the same clientMessageId over REST is safe.
      }
    }
    const message = await api.send(entry.sessionId, entry.content, entry.clientMessageId, entry.encrypted);
    acceptMessage(message, "rest");
  } catch (err) {
    if (err instanceof ApiError && !err.transient) {
      entry.state = "failed";
      entry.error = err.detail;
      // Who blocks, or that the chat closed: the list says.
      if (err.code === "SESSION_BLOCKED" || err.code === "SESSION_CLOSED") scheduleRefresh(0);
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

// ---- edits and deletes of my messages ------------------------------------------------------

// Refusals that end the change (the editor closes, the reason stays under the message).
const FINAL_REFUSALS = {
  EDIT_WINDOW_CLOSED: "Not edited: the time to edit this message has passed.",
  MESSAGE_DELETED: "Not changed: this message was deleted.",
  NOT_MESSAGE_SENDER: "Not changed: only the sender of a message can change it.",
  MESSAGE_NOT_FOUND: "Not changed: this message no longer exists.",
  NOT_PARTICIPANT: "Not changed: you are not in this chat.",
  CLIENT_MESSAGE_ID_REUSED: "Not changed: the server took this request for another one; try again.",
  SESSION_BLOCKED: "Not changed: this chat is blocked.",
  SESSION_CLOSED: "Not changed: this chat is closed.",
};

function focusOn(key) {
  const node = [...$("messages").querySelectorAll("[data-focus]")].find((n) => n.dataset.focus === key);
  if (node) node.focus({ preventScroll: true });
  return node;
}

function startEdit(message) {
  state.changing.set(message.messageId, {
    messageId: message.messageId,
    sessionId: message.sessionId,
    kind: "edit",
    mode: "edit",
    state: "idle",
    draft: shown(message).text,
    error: null,
  });
  renderConversation();
  const input = focusOn(`${message.messageId}:editor`);
  if (input) input.setSelectionRange(input.value.length, input.value.length);
}

function askDelete(message) {
  state.changing.set(message.messageId, {
    messageId: message.messageId,
    sessionId: message.sessionId,
    kind: "delete",
    mode: "confirm",
    state: "idle",
    error: null,
  });
  renderConversation();
  focusOn(`${message.messageId}:cancel`);
}

function endChange(messageId) {
  state.changing.delete(messageId);
  renderConversation();
  focusOn(`${messageId}:edit`);
}

function saveEdit(messageId) {
  const entry = state.changing.get(messageId);
  const c = state.open;
  const message = c && c.byId(messageId);
  if (!entry || entry.state === "saving" || !message) return;
  const content = entry.draft;
  if (!content.trim()) {
    entry.error = "A message cannot be empty; delete it instead.";
    renderConversation();
    return;
  }
  if (encoder.encode(content).length > MAX_CONTENT_BYTES) {
    entry.error = `A message holds at most ${MAX_CONTENT_BYTES} bytes.`;
    renderConversation();
    return;
  }
  const before = shown(message);
  if (content === before.text) {
    endChange(messageId); // nothing to change
    return;
  }
  const focused = $("messages").contains(document.activeElement);
  Object.assign(entry, { kind: "edit", state: "saving", content, clientMessageId: uuid4(), attempts: 0, error: null, focused });
  renderConversation();
  if (!before.encrypted) {
    makeChange(entry);
    return;
  }
  // An encrypted message is edited encrypted (the server refuses a change of kind), for the
  // devices current now, once: every retry sends the same envelope.
  encryption
    .ready(message.sessionId)
    .then(() => encryption.seal(message.sessionId, content))
    .then(
      (envelope) => {
        entry.encrypted = envelope;
        makeChange(entry);
      },
      (err) => refuseChange(entry, "NOT_ENCRYPTED", `it could not be encrypted (${describe(err)})`),
    );
}

function confirmDelete(messageId) {
  const entry = state.changing.get(messageId);
  if (!entry || entry.state === "saving") return;
  const focused = $("messages").contains(document.activeElement);
  Object.assign(entry, { kind: "delete", state: "saving", clientMessageId: uuid4(), attempts: 0, error: null, focused });
  renderConversation();
  makeChange(entry);
}

/**
 * An edit or a delete, as sends go: over the live connection when it is up (SEND with a
 * receipt; a refusal comes on /user/queue/error), else, or when no receipt comes, over REST
 * with the same clientMessageId (the server answers a repeat with the change it made).
 * Network errors, 429 and 5xx are tried again with backoff; a refusal is shown inline.
 */
async function makeChange(entry) {
  if (state.changing.get(entry.messageId) !== entry || entry.state !== "saving") return;
  entry.attempts += 1;
  const body = { sessionId: entry.sessionId, messageId: entry.messageId, clientMessageId: entry.clientMessageId };
  if (entry.kind === "edit" && entry.encrypted) body.encrypted = entry.encrypted;
  else if (entry.kind === "edit") body.content = entry.content;
  try {
    if (live.connected) {
      try {
        await live.change(entry.kind, body);
        finishChange(entry, null); // committed; the change itself came on the ack queue
        return;
      } catch (err) {
        if (!(err instanceof LiveError)) throw err;
      }
    }
    const change =
      entry.kind === "edit"
        ? await api.editMessage(entry.sessionId, entry.messageId, entry.content, entry.clientMessageId, entry.encrypted)
        : await api.deleteMessage(entry.sessionId, entry.messageId, entry.clientMessageId);
    finishChange(entry, change);
  } catch (err) {
    if (err instanceof LiveRefusal || (err instanceof ApiError && !err.transient)) {
      refuseChange(entry, err.code, err.detail);
    } else {
      const wait = err instanceof ApiError && err.retryAfter
        ? err.retryAfter * 1000
        : Math.min(30000, 1000 * 2 ** Math.min(entry.attempts, 5));
      setTimeout(() => makeChange(entry), wait);
    }
  }
}

function finishChange(entry, change) {
  if (change) acceptChange(change, "rest");
  if (state.changing.get(entry.messageId) !== entry) return;
  state.changing.delete(entry.messageId);
  renderConversation();
  if (!entry.focused && !$("messages").contains(document.activeElement)) return;
  // Back to the message's Edit button, or (a tombstone has none) to the composer.
  if (entry.kind !== "edit" || !focusOn(`${entry.messageId}:edit`)) $("composer-input").focus();
}

function refuseChange(entry, code, detail) {
  if (state.changing.get(entry.messageId) !== entry) return;
  entry.state = "idle";
  entry.code = code;
  if (FINAL_REFUSALS[code]) {
    entry.mode = "error"; // the editor or the question closes; the reason stays
    entry.error = FINAL_REFUSALS[code];
  } else {
    entry.error = `Not saved: ${detail || code}`; // e.g. the text: fix it and save again
    if (entry.mode === "confirm") entry.mode = "error";
  }
  renderConversation();
  // The keyboard stays where the user can act: the editor to fix the text, or Edit.
  if (entry.focused) focusOn(`${entry.messageId}:${entry.mode === "edit" ? "editor" : "edit"}`);
}

function onMessageAction(action, messageId) {
  const c = state.open;
  const message = c && c.byId(messageId);
  if (!message) return;
  switch (action) {
    case "edit":
      if (isMine(message) && !message.deleted) startEdit(message);
      break;
    case "delete":
      if (isMine(message) && !message.deleted) askDelete(message);
      break;
    case "confirm-delete":
      confirmDelete(messageId);
      break;
    case "cancel":
    case "dismiss":
      endChange(messageId);
      break;
    default:
      break;
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
  blocking.mount();
  closing.mount();
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

  // The actions on messages (edit, delete, their confirm and cancel), on the list itself
  // because the list is drawn anew.
  const messages = $("messages");
  messages.addEventListener("click", (event) => {
    const target = event.target.closest("button[data-action]");
    const item = target && target.closest("li.msg");
    if (item && item.dataset.messageId) onMessageAction(target.dataset.action, item.dataset.messageId);
  });
  messages.addEventListener("submit", (event) => {
    const form = event.target.closest("form.editor");
    if (!form) return;
    event.preventDefault();
    saveEdit(form.dataset.messageId);
  });
  messages.addEventListener("input", (event) => {
    const form = event.target.closest("form.editor");
    const entry = form && state.changing.get(form.dataset.messageId);
    if (entry) entry.draft = event.target.value;
  });
  messages.addEventListener("keydown", (event) => {
    const form = event.target.closest("form.editor, .confirm");
    if (!form) return;
    const messageId = form.closest("li.msg").dataset.messageId;
    if (event.key === "Escape") {
      event.preventDefault();
      const entry = state.changing.get(messageId);
      if (entry && entry.state !== "saving") endChange(messageId);
    } else if (
      form.tagName === "FORM" &&
      event.key === "Enter" &&
      !event.shiftKey &&
      !event.isComposing &&
      event.target.tagName === "TEXTAREA"
    ) {
      event.preventDefault();
      form.requestSubmit();
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
    send(c.sessionId, content);
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
