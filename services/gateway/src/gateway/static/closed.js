// Closed chats and deleted accounts in the web client.
//
// A chat closes for good when the other participant's account is deleted: the session's
// `state` is CLOSED (`closedReason` PARTICIPANT_DELETED) in the session list and `init`, and
// the live `closed` event says so the moment it happens. Its history stays readable (the
// deleted person's messages are tombstones from a placeholder, "Deleted user"); nothing more is
// sent, edited, deleted, typed or subscribed to in it. This module draws that state: the
// banner under the chat's header and the session list's marker. The composer, the block
// control and the topic follow it in block.js and app.js, as they follow a block.
//
// And the page of the user whose own account was deleted: the edge closes their connections
// with an ERROR `USER_DELETED`; the page signs out, stops reconnecting and says why
// (`showDeleted`), in the sign-in view, until someone signs in again.

import { el } from "./dom.js";

export const CLOSED = "CLOSED";
export const DELETED_NAME = "Deleted user"; // the server's placeholder name
const NOTICE_KEY = "chat.notice"; // sessionStorage: the sign-in view's notice, across a reload

/** Whether a session (its summary) is closed for good. */
export const isClosed = (summary) => Boolean(summary) && summary.state === CLOSED;

export class Closing {
  constructor() {
    // sessionId -> the peer's name as this page knew it when the chat closed, for the banner.
    // In memory only: after a reload the server's placeholder is all there is.
    this.names = new Map();
  }

  /** Makes the banner (under the chat's header) and the sign-in view's notice. */
  mount() {
    this.banner = el("p", "closed-banner");
    this.banner.id = "closed-banner";
    this.banner.setAttribute("role", "status");
    this.banner.hidden = true;
    document.querySelector("#chat-body .chat-header").after(this.banner);

    this.notice = el("section", "card notice");
    this.notice.id = "signin-notice";
    this.notice.setAttribute("role", "status");
    this.notice.hidden = true;
    this.noticeTitle = el("h2");
    this.noticeText = el("p", "hint");
    this.notice.append(this.noticeTitle, this.noticeText);
    document.getElementById("signin-form").before(this.notice);
    const saved = sessionStorage.getItem(NOTICE_KEY);
    if (saved) this.showDeleted(saved);
  }

  /** Keeps the peer's name of a chat about to be marked closed (the banner names them). */
  remember(summary) {
    const name = summary.peer && summary.peer.displayName;
    if (name && name !== DELETED_NAME && !this.names.has(summary.sessionId)) {
      this.names.set(summary.sessionId, name);
    }
  }

  sentence(summary) {
    const name = this.names.get(summary.sessionId) || "The other person";
    return `${name} deleted their account. This chat is closed.`;
  }

  /** Draws the open chat's state (null: none open). */
  render(summary) {
    if (!this.banner) return;
    const closed = isClosed(summary);
    this.banner.hidden = !closed;
    this.banner.textContent = closed ? this.sentence(summary) : "";
    const body = document.getElementById("chat-body");
    if (closed) body.dataset.closed = "true";
    else delete body.dataset.closed;
  }

  /** The session list's marker of a closed chat, or null. */
  marker(summary) {
    if (!isClosed(summary)) return null;
    const mark = el("span", "closed-mark", "closed");
    mark.title = this.sentence(summary);
    return mark;
  }

  /** The sign-in view says that the account `email` was deleted (kept across a reload). */
  showDeleted(email) {
    sessionStorage.setItem(NOTICE_KEY, email);
    this.notice.dataset.reason = "user-deleted";
    this.noticeTitle.textContent = "This account was deleted.";
    this.noticeText.textContent =
      `${email} no longer exists: its chats and messages were erased, and this page signed out. ` +
      "This browser no longer keeps its encryption key.";
    this.notice.hidden = false;
  }

  /** Someone signs in: the notice goes. */
  clearNotice() {
    sessionStorage.removeItem(NOTICE_KEY);
    if (this.notice) this.notice.hidden = true;
  }
}
