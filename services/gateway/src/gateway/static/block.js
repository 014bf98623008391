// Blocking in the web client: the open chat's Block / Unblock control (a block asks first),
// the blocked state (who blocks, as far as the session's `blockedBy` says), the composer shut
// while the chat is blocked, and the marker in the session list. The requests are POST and
// DELETE /api/chat/{id}/block; the live `block` / `unblock` events and the session list keep
// the state current. app.js owns the sessions and the live connection: it draws through this
// module and is told of every new state (`onState`), on which it leaves or follows the topic.
// Its nodes are made here, in the chat's header and under it, so the page's HTML stays as is.
// A chat closed for good (closed.js) has no block control, banner or marker: nothing is left to
// block, and its composer is shut here as a blocked one is.

import { ApiError } from "./api.js";
import { el } from "./dom.js";
import { isClosed } from "./closed.js";

// After my own unblock the edges may still hold the session as blocked until the `unblock`
// event reaches them (a SUBSCRIBE then would be refused and close the connection): the topic
// is followed again on that event, or after this long without it.
const SETTLE_MS = 4000;

const norm = (email) => String(email || "").trim().toLowerCase();

/** Who blocks a session, from its summary (`blockedBy`, emails): {blocked, byMe, byPeer}. */
export function blockOf(summary, me) {
  const by = ((summary && summary.blockedBy) || []).map(norm);
  const byMe = by.includes(norm(me));
  return { blocked: by.length > 0, byMe, byPeer: by.some((email) => email !== norm(me)) };
}

/** "me", "peer", "both" or "" (data-by of the banner and the marker). */
function who(byMe, byPeer) {
  if (byMe && byPeer) return "both";
  return byMe ? "me" : byPeer ? "peer" : "";
}

function peerName(summary) {
  return summary.peer.displayName || summary.peer.email;
}

/** The state in words: the banner, and the marker's tooltip in the session list. */
function sentence(summary, me) {
  const { byMe, byPeer } = blockOf(summary, me);
  const name = peerName(summary);
  if (byMe && byPeer) return `You and ${name} blocked each other. Neither of you can send messages in this chat.`;
  if (byMe) return `You blocked ${name}. Neither of you can send messages in this chat until you unblock.`;
  if (byPeer) return `${name} blocked you. You can't send messages in this chat.`;
  return "";
}

export class Blocking {
  /**
   * @param {object} hooks
   * @param {import("./api.js").Api} hooks.api REST calls
   * @param {() => string | null} hooks.me the signed-in user's email
   * @param {(sessionId: string, blockedBy: string[]) => void} hooks.onState a new state, from
   *   the server's answer to a block or an unblock made here
   * @param {(sessionId: string) => void} hooks.onSettled an unblock made here is known to the
   *   edges by now (or should be): the chat's topic may be followed again
   * @param {(message: string) => void} hooks.onError a request that failed
   * @param {() => void} hooks.refresh the state held may be stale: read the session list again
   */
  constructor(hooks) {
    this.hooks = hooks;
    this.summary = null; // the open chat's, as last drawn
    this.asking = null; // sessionId whose block waits for the confirm
    this.busy = null; // sessionId with a request under way
    this.busyKind = null; // "block" or "unblock": the request under way
    this.clock = 0;
    this.changed = new Map(); // sessionId -> clock of the last change heard of
    this.settling = new Map(); // sessionId -> timer, after my own unblock (SETTLE_MS)
  }

  /** Makes the control, the confirm and the banner, in the chat's header and under it. */
  mount() {
    const header = document.querySelector("#chat-body .chat-header");
    this.toggle = el("button", "link block-toggle", "Block");
    this.toggle.id = "block-toggle";
    this.toggle.type = "button";
    header.append(this.toggle);

    this.confirm = el("div", "block-confirm");
    this.confirm.id = "block-confirm";
    this.confirm.setAttribute("role", "group");
    this.confirm.setAttribute("aria-label", "Confirm block");
    this.question = el("span", "confirm-question");
    this.yes = el("button", "danger", "Block");
    this.yes.type = "button";
    this.yes.dataset.action = "confirm-block";
    this.no = el("button", "link", "Cancel");
    this.no.type = "button";
    this.no.dataset.action = "cancel-block";
    this.confirm.append(this.question, this.yes, this.no);
    this.confirm.hidden = true;

    this.banner = el("p", "block-banner");
    this.banner.id = "block-banner";
    this.banner.setAttribute("role", "status");
    this.banner.hidden = true;
    header.after(this.confirm, this.banner);
    this.placeholder = document.getElementById("composer-input").placeholder;

    this.toggle.addEventListener("click", () => this.onToggle());
    this.yes.addEventListener("click", () => this.change("block"));
    this.no.addEventListener("click", () => this.cancel());
    this.confirm.addEventListener("keydown", (event) => {
      if (event.key === "Escape") {
        event.preventDefault();
        this.cancel();
      }
    });
  }

  /** Draws the open chat's state (null: none open); the composer is shut while blocked. */
  render(summary) {
    if (!this.toggle) return;
    const me = this.hooks.me();
    const sessionId = summary ? summary.sessionId : null;
    const closed = isClosed(summary);
    if (this.asking !== sessionId || closed) this.asking = null;
    this.summary = summary;
    const { byMe, byPeer } = blockOf(summary, me);
    const blocked = blockOf(summary, me).blocked && !closed;
    const name = summary ? peerName(summary) : "";
    const busy = summary !== null && this.busy === sessionId;

    this.toggle.hidden = !summary || closed;
    // While a request is under way the control names it, whatever its live event already drew
    // (the `unblock` event may come before the DELETE's answer).
    const label = busy ? (this.busyKind === "unblock" ? "Unblocking…" : "Blocking…") : byMe ? "Unblock" : "Block";
    this.toggle.textContent = label;
    this.toggle.dataset.action = byMe ? "unblock" : "block";
    this.toggle.setAttribute("aria-label", `${byMe ? "Unblock" : "Block"} ${name}`);
    this.toggle.disabled = busy || this.asking !== null;

    this.confirm.hidden = this.asking === null || !summary;
    this.question.textContent = `Block ${name}? Neither of you will be able to send messages in this chat, nor see the other online or typing, until you unblock.`;
    this.yes.disabled = this.no.disabled = busy;

    this.banner.hidden = !blocked;
    this.banner.textContent = blocked ? sentence(summary, me) : "";
    this.banner.dataset.by = who(byMe, byPeer);

    const body = document.getElementById("chat-body");
    if (blocked) body.dataset.blocked = "true";
    else delete body.dataset.blocked;
    const input = document.getElementById("composer-input");
    input.disabled = blocked || closed;
    input.placeholder = closed ? "This chat is closed" : blocked ? "This chat is blocked" : this.placeholder;
    document.querySelector("#composer button[type=submit]").disabled = blocked || closed;
  }

  /** The session list's marker of a blocked chat, or null (none on a closed one). */
  marker(summary) {
    const { blocked, byMe, byPeer } = blockOf(summary, this.hooks.me());
    if (!blocked || isClosed(summary)) return null;
    const mark = el("span", "blocked-mark", "blocked");
    mark.dataset.by = who(byMe, byPeer);
    mark.title = sentence(summary, this.hooks.me());
    return mark;
  }

  /** Notes a change heard of (event or answer) to the session's block state. */
  note(sessionId) {
    this.changed.set(sessionId, ++this.clock);
  }

  /** A mark to take before reading the session list (see `newerThan`). */
  mark() {
    return this.clock;
  }

  /** Whether a change heard of since `mark` makes a session list read after it stale. */
  newerThan(sessionId, mark) {
    return (this.changed.get(sessionId) || 0) > mark;
  }

  /** Whether an unblock made here is still on its way to the edges (see SETTLE_MS). */
  unsettled(sessionId) {
    return this.settling.has(sessionId);
  }

  /** The `unblock` event came (the edges know): the topic may be followed again. */
  settled(sessionId) {
    clearTimeout(this.settling.get(sessionId));
    this.settling.delete(sessionId);
  }

  onToggle() {
    const summary = this.summary;
    if (!summary || this.busy || isClosed(summary)) return;
    if (blockOf(summary, this.hooks.me()).byMe) {
      this.change("unblock");
      return;
    }
    this.asking = summary.sessionId;
    this.render(summary);
    this.no.focus();
  }

  cancel() {
    if (this.busy) return;
    this.asking = null;
    this.render(this.summary);
    this.toggle.focus();
  }

  async change(kind) {
    const summary = this.summary;
    if (!summary || this.busy) return;
    const sessionId = summary.sessionId;
    const wasBlocked = blockOf(summary, this.hooks.me()).blocked;
    const start = this.clock;
    this.busy = sessionId;
    this.busyKind = kind;
    this.render(summary);
    try {
      const path = `/api/chat/${encodeURIComponent(sessionId)}/block`;
      const { data } = await this.hooks.api.request(kind === "block" ? "POST" : "DELETE", path);
      const blockedBy = data.blockedBy || [];
      // Open again by my unblock, and its event not heard yet: the topic waits for it.
      if (kind === "unblock" && wasBlocked && !blockedBy.length && !this.newerThan(sessionId, start)) {
        this.settled(sessionId);
        const timer = setTimeout(() => {
          this.settling.delete(sessionId);
          this.hooks.onSettled(sessionId);
        }, SETTLE_MS);
        this.settling.set(sessionId, timer);
      }
      this.asking = null;
      this.hooks.onState(sessionId, blockedBy);
    } catch (err) {
      const why = err instanceof ApiError ? err.detail : String((err && err.message) || err);
      this.hooks.onError(`Could not ${kind}: ${why}`);
      if (err instanceof ApiError && !err.transient) this.hooks.refresh(); // e.g. NOT_BLOCKER
    } finally {
      this.busy = this.busyKind = null;
      this.render(this.summary);
      // The keyboard goes back to the control (the confirm's buttons are gone).
      if (this.summary && this.summary.sessionId === sessionId) this.toggle.focus();
    }
  }
}
