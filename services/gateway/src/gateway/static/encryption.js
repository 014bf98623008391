// End-to-end encryption in the page: this device's key (published at sign-in), the keys of
// the open chat's participants and their fingerprints, the per-chat switch, warnings when a
// key changes, and the decrypted text of envelopes (cached). The scheme is e2ee.js's; the
// browser's storage keystore.js's. app.js asks `text(message)` when it draws a message, and
// `seal(sessionId, text)` before it sends or edits one.

import { ApiError } from "./api.js";
import { el } from "./dom.js";
import { isClosed } from "./closed.js";
import { KEY_ALGORITHM, b64url, open, seal, supported } from "./e2ee.js";
import { deviceKey, forget, pin, pinned } from "./keystore.js";

const CACHE_MAX = 5000; // decrypted texts kept (by ciphertext)
const PUBLISH_TRIES = 6;
const PREF_KEY = "chat.e2ee.off"; // localStorage: the chats this user turned encryption off in

const $ = (id) => document.getElementById(id);
const norm = (email) => String(email || "").trim().toLowerCase();

export class Encryption {
  /**
   * @param {object} hooks
   * @param {import("./api.js").Api} hooks.api
   * @param {() => void} hooks.onChange something shown changed (a text decrypted, keys loaded)
   */
  constructor({ api, onChange }) {
    this.api = api;
    this.onChange = onChange;
    this.reset();
    $("e2ee-toggle").addEventListener("click", () => this.toggle());
    $("e2ee-warnings").addEventListener("click", (event) => {
      const target = event.target.closest("button[data-warning]");
      if (target) this.dismiss(target.dataset.warning);
    });
  }

  reset() {
    this.email = null;
    this.device = null; // {email, keyId, privateKey, publicRaw, fingerprint}
    this.status = "off"; // "starting" | "ready" | "unpublished" | "unsupported" | "off"
    this.problem = null;
    this.sessions = new Map(); // sessionId -> {state, keys, promise, warnings, peer}
    this.cache = new Map(); // ciphertext -> {state, text}
    this.previews = new Map(); // sessionId -> {key, envelope} of its last message
    this.current = null; // {sessionId, peer} of the open chat
    this.generation = (this.generation || 0) + 1;
  }

  // ---- this device ---------------------------------------------------------------------

  /** Makes or loads this browser's key for `email` and publishes it (PUT is idempotent). */
  async start(email) {
    const current = this.current;
    this.reset();
    this.current = current;
    this.email = norm(email);
    const generation = this.generation;
    if (!supported()) {
      this.status = "unsupported";
      this.problem = "this browser offers no WebCrypto or IndexedDB here (a secure context is needed)";
      this.changed();
      return;
    }
    this.status = "starting";
    this.changed();
    let device;
    try {
      device = await deviceKey(this.email);
    } catch (err) {
      if (generation !== this.generation) return;
      this.status = "unsupported";
      this.problem = `no key store: ${err.message || err}`;
      this.changed();
      return;
    }
    if (generation !== this.generation) return;
    this.device = device;
    const body = { algorithm: KEY_ALGORITHM, publicKey: b64url(device.publicRaw) };
    for (let attempt = 1; attempt <= PUBLISH_TRIES; attempt++) {
      try {
        await this.api.request("PUT", `/api/chat/keys/${encodeURIComponent(device.keyId)}`, body);
        if (generation !== this.generation) return;
        this.status = "ready";
        this.problem = null;
        this.sessions.clear(); // our own key is in every chat's list now
        this.changed();
        this.loadCurrent();
        return;
      } catch (err) {
        if (generation !== this.generation) return;
        const transient = !(err instanceof ApiError) || err.transient;
        this.status = "unpublished";
        this.problem = `this device's key is not published: ${err.detail || err.message}`;
        this.changed();
        if (!transient || attempt === PUBLISH_TRIES) return;
        const wait = err.retryAfter ? err.retryAfter * 1000 : 1000 * 2 ** attempt;
        await new Promise((resolve) => setTimeout(resolve, Math.min(wait, 30000)));
        if (generation !== this.generation) return;
      }
    }
  }

  stop() {
    this.reset();
    this.changed();
  }

  /** The account `email` was deleted: this browser's key for it, its pins and its choices go. */
  async forget(email) {
    localStorage.removeItem(`${PREF_KEY}.${norm(email)}`);
    if (supported()) await forget(norm(email));
  }

  // ---- the keys of a chat ----------------------------------------------------------------

  /**
   * The chat now open (null: none): its keys are loaded, and the bar shows them. Not in a chat
   * closed for good (closed.js): nothing more is sent there, so there is nothing to encrypt.
   */
  open(summary) {
    this.current = summary
      ? { sessionId: summary.sessionId, peer: norm(summary.peer.email), closed: isClosed(summary) }
      : null;
    this.loadCurrent();
    this.render();
  }

  loadCurrent() {
    if (this.current && !this.current.closed) this.load(this.current.sessionId);
  }

  entry(sessionId) {
    let entry = this.sessions.get(sessionId);
    if (!entry) {
      entry = { state: "idle", keys: [], warnings: [], promise: null, foreign: 0 };
      this.sessions.set(sessionId, entry);
    }
    return entry;
  }

  /** Reads the participants' current keys (again), and notes what changed since last time. */
  load(sessionId) {
    const entry = this.entry(sessionId);
    if (this.status !== "ready") return Promise.resolve(entry);
    const generation = this.generation;
    const round = (entry.round || 0) + 1; // of two reads under way, the later one counts
    entry.round = round;
    entry.state = entry.state === "ready" ? "ready" : "loading";
    entry.promise = (async () => {
      try {
        const { data } = await this.api.request("GET", `/api/chat/${encodeURIComponent(sessionId)}/keys`);
        if (generation !== this.generation || round !== entry.round) return entry;
        const all = data.participants.flatMap((p) => p.keys.map((k) => ({ ...k, email: norm(p.email) })));
        entry.keys = all.filter((k) => k.algorithm === KEY_ALGORITHM);
        entry.foreign = all.length - entry.keys.length; // keys of a scheme this page cannot use
        entry.state = "ready";
        const emails = data.participants.map((p) => norm(p.email));
        for (const email of emails) await this.compare(entry, email, all.filter((k) => k.email === email));
      } catch (err) {
        if (generation !== this.generation || round !== entry.round) return entry;
        entry.state = "failed";
        entry.error = err.detail || err.message;
      }
      this.changed();
      return entry;
    })();
    return entry.promise;
  }

  /** Warns about the keys of `email` that differ from those pinned on this device, then pins. */
  async compare(entry, email, keys) {
    const now = {};
    for (const k of keys) now[k.keyId] = k.fingerprint;
    if (email === this.email && this.device) delete now[this.device.keyId];
    const before = await pinned(this.email, email).catch(() => null);
    if (before) {
      const who = email === this.email ? "Your account" : email;
      for (const [keyId, fp] of Object.entries(now)) {
        if (!(keyId in before)) {
          this.warn(entry, `${email}|${keyId}|${fp}`, email === this.email
            ? `A new device was added to your account (key ${keyId}, fingerprint ${fp}).`
            : `${who} has a new key (a new device?): ${keyId}, fingerprint ${fp}. Compare it with them.`);
        } else if (before[keyId] !== fp) {
          this.warn(entry, `${email}|${keyId}|${fp}`,
            `${who}: key ${keyId} changed, from ${before[keyId]} to ${fp}. Compare it with them.`);
        }
      }
      for (const keyId of Object.keys(before)) {
        if (!(keyId in now)) {
          this.warn(entry, `${email}|${keyId}|revoked`, `${who}: key ${keyId} was removed (revoked).`);
        }
      }
    }
    await pin(this.email, email, now).catch(() => {});
  }

  warn(entry, id, text) {
    if (!entry.warnings.some((w) => w.id === id)) entry.warnings.push({ id, text });
  }

  dismiss(id) {
    const entry = this.current && this.sessions.get(this.current.sessionId);
    if (entry) entry.warnings = entry.warnings.filter((w) => w.id !== id);
    this.render();
  }

  /** A key event (/user/queue/keys): what every chat holds is stale; the open one reloads. */
  onKeyEvent(event) {
    if (!event || !event.email) return;
    const email = norm(event.email);
    if (this.device && email === this.email && event.keyId === this.device.keyId) {
      // This device's key, revoked on another device: not published again behind the user's
      // back (a sign-in publishes it again); until then nothing is encrypted here.
      if (event.change === "revoked") {
        this.status = "unpublished";
        this.problem = "this device's key was revoked (on another device): sign in again to publish it";
        this.changed();
      }
      return;
    }
    for (const [sessionId, entry] of this.sessions) {
      if (this.current && sessionId === this.current.sessionId) continue;
      if (entry.state !== "loading") this.sessions.delete(sessionId);
    }
    this.loadCurrent();
  }

  /** After a reconnect: events may have been missed. */
  refresh() {
    for (const [sessionId, entry] of this.sessions) {
      if (!this.current || sessionId !== this.current.sessionId) {
        if (entry.state !== "loading") this.sessions.delete(sessionId);
      }
    }
    this.loadCurrent();
  }

  // ---- the switch ----------------------------------------------------------------------------

  /** Every participant has a key this page can encrypt to (and this device has one). */
  available(sessionId) {
    const entry = this.sessions.get(sessionId);
    if (this.status !== "ready" || !entry || entry.state !== "ready") return false;
    const emails = new Set(entry.keys.map((k) => k.email));
    const peer = this.current && this.current.sessionId === sessionId ? this.current.peer : null;
    return emails.has(this.email) && (peer ? emails.has(peer) : emails.size >= 2);
  }

  turnedOff() {
    try {
      return new Set(JSON.parse(localStorage.getItem(`${PREF_KEY}.${this.email}`) || "[]"));
    } catch {
      return new Set();
    }
  }

  /** On by default where every participant has a key; the user may turn it off per chat. */
  enabledFor(sessionId) {
    return this.available(sessionId) && !this.turnedOff().has(sessionId);
  }

  toggle() {
    if (!this.current) return;
    const sessionId = this.current.sessionId;
    const off = this.turnedOff();
    if (off.has(sessionId)) off.delete(sessionId);
    else off.add(sessionId);
    localStorage.setItem(`${PREF_KEY}.${this.email}`, JSON.stringify([...off]));
    this.render();
  }

  /** Waits (bounded) for the chat's keys, so a send right after opening it is not sent plain. */
  async ready(sessionId) {
    const entry = this.entry(sessionId);
    if (this.status === "starting" || entry.state === "idle") {
      for (let i = 0; i < 50 && (this.status === "starting" || entry.state === "idle"); i++) {
        if (this.status === "ready" && entry.state === "idle") this.load(sessionId);
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
    }
    if (entry.promise) {
      await Promise.race([entry.promise, new Promise((resolve) => setTimeout(resolve, 5000))]);
    }
  }

  // ---- envelopes -----------------------------------------------------------------------------

  /** An envelope of `text` for every current device of both participants. */
  async seal(sessionId, text) {
    const entry = this.sessions.get(sessionId);
    if (!this.device || !entry || entry.state !== "ready") throw new Error("the chat's keys are not loaded");
    const recipients = entry.keys.map((k) => ({ email: k.email, keyId: k.keyId, publicKey: k.publicKey }));
    const mine = (r) => r.email === this.email && r.keyId === this.device.keyId;
    if (!recipients.some(mine)) {
      recipients.push({ email: this.email, keyId: this.device.keyId, publicKey: b64url(this.device.publicRaw) });
    }
    const envelope = await seal(text, { sessionId, senderKeyId: this.device.keyId, recipients });
    this.remember(envelope.ciphertext, { state: "ok", text });
    return envelope;
  }

  remember(ciphertext, result) {
    if (this.cache.size >= CACHE_MAX) this.cache.delete(this.cache.keys().next().value);
    this.cache.set(ciphertext, result);
  }

  /**
   * What to show for an envelope of `sessionId`: {state: "ok", text} once decrypted,
   * {state: "pending"} while it is (onChange follows), {state: "failed", text: the reason}.
   */
  text(envelope, sessionId) {
    if (!envelope || typeof envelope !== "object" || !envelope.ciphertext) {
      return { state: "failed", text: "encrypted message" };
    }
    const known = this.cache.get(envelope.ciphertext);
    if (known) return known;
    if (!this.device) {
      if (this.status === "starting") return { state: "pending", text: "" };
      return { state: "failed", text: "cannot decrypt (no key for this device)" };
    }
    const pending = { state: "pending", text: "" };
    this.remember(envelope.ciphertext, pending);
    const generation = this.generation;
    open(envelope, sessionId, this.device).then(
      (text) => ({ state: "ok", text }),
      (err) => ({ state: "failed", text: err.reason || "cannot decrypt" }),
    ).then((result) => {
      if (generation !== this.generation) return;
      this.remember(envelope.ciphertext, result);
      this.changed();
    });
    return pending;
  }

  /**
   * The envelope of a chat's last message for its preview: the session list says only
   * `encrypted: true`, so the newest history entry is read, once per version of the message
   * (null until it is here; onChange follows).
   */
  previewEnvelope(sessionId, last) {
    if (!this.device) return null;
    const key = `${last.seq}|${last.editedAt || ""}`;
    const known = this.previews.get(sessionId);
    if (known && known.key === key) return known.envelope;
    const entry = { key, envelope: null };
    this.previews.set(sessionId, entry);
    const generation = this.generation;
    this.api.history(sessionId, { limit: 1 }).then(
      ({ messages }) => {
        const newest = messages[0];
        if (generation !== this.generation || !newest || newest.seq !== last.seq) return;
        if (!newest.encrypted || typeof newest.encrypted !== "object") return;
        entry.envelope = newest.encrypted;
        this.onChange();
      },
      () => {}, // the preview stays "encrypted message"
    );
    return null;
  }

  /** Whether the sender's key of an envelope is one this page knows as current. */
  senderKeyKnown(envelope, senderEmail, sessionId) {
    const entry = this.sessions.get(sessionId);
    if (!entry || entry.state !== "ready" || !envelope) return true; // nothing to say yet
    return entry.keys.some((k) => k.email === norm(senderEmail) && k.keyId === envelope.senderKeyId);
  }

  // ---- the bar over the conversation -------------------------------------------------------

  changed() {
    this.render();
    this.onChange();
  }

  render() {
    const bar = $("e2ee");
    const c = this.current;
    bar.hidden = !c || c.closed;
    if (!c || c.closed) return;
    const entry = this.sessions.get(c.sessionId);
    const toggle = $("e2ee-toggle");
    const on = this.enabledFor(c.sessionId);
    const available = this.available(c.sessionId);
    toggle.setAttribute("aria-pressed", String(on));
    toggle.textContent = on ? "Encryption on" : "Encryption off";
    toggle.disabled = !available;
    bar.dataset.state = on ? "on" : "off";
    let why;
    if (this.status !== "ready") {
      why = this.problem || (this.status === "starting" ? "preparing this device's key…" : "no key on this device");
    } else if (!entry || entry.state === "idle" || entry.state === "loading") {
      why = "loading the keys…";
    } else if (entry.state === "failed") {
      why = `the keys could not be loaded (${entry.error}): messages go unencrypted`;
    } else if (!available) {
      why = entry.foreign
        ? `${c.peer} has no key this page can encrypt to (only ${entry.foreign} of another scheme): messages go unencrypted`
        : `${c.peer} has no key yet: messages go unencrypted`;
    } else if (on) {
      why = "new messages are end-to-end encrypted";
    } else {
      why = "turned off for this chat: new messages go unencrypted";
    }
    $("e2ee-state").textContent = why;
    toggle.title = available
      ? on ? "Turn end-to-end encryption off for this chat" : "Turn end-to-end encryption on for this chat"
      : "Both people need a key to encrypt";

    const items = [];
    if (this.device) items.push(this.keyItem("This device", this.email, this.device.keyId, this.device.fingerprint, "own"));
    for (const k of entry && entry.state === "ready" ? entry.keys : []) {
      if (k.email === this.email && this.device && k.keyId === this.device.keyId) continue;
      const label = k.email === this.email ? "Your other device" : k.email;
      items.push(this.keyItem(label, k.email, k.keyId, k.fingerprint, k.email === this.email ? "mine" : "peer"));
    }
    if (entry && entry.foreign) {
      items.push(el("li", "e2ee-foreign", `${entry.foreign} key(s) of another scheme: not encrypted to`));
    }
    $("e2ee-keys").replaceChildren(...items);

    const warnings = (entry && entry.warnings) || [];
    $("e2ee-warnings").hidden = warnings.length === 0;
    $("e2ee-warnings").replaceChildren(
      ...warnings.map((w) => {
        const li = el("li", "e2ee-warning", w.text);
        li.dataset.warning = w.id;
        const dismiss = el("button", "link dismiss", "Dismiss");
        dismiss.type = "button";
        dismiss.dataset.warning = w.id;
        dismiss.setAttribute("aria-label", "Dismiss this key warning");
        li.append(" ", dismiss);
        return li;
      }),
    );
  }

  keyItem(label, email, keyId, fp, whose) {
    const li = el("li", "e2ee-key");
    li.dataset.email = email;
    li.dataset.keyId = keyId;
    li.dataset.whose = whose;
    li.append(el("span", "e2ee-key-owner", label), " ", el("span", "e2ee-key-id", keyId), " ");
    li.append(el("code", "fingerprint", fp));
    return li;
  }
}
