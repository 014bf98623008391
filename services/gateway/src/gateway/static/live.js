// The live connection: STOMP 1.2 at /ws on this origin, with @stomp/stompjs (vendored UMD
// bundle, global `StompJs`). It reconnects by itself; after each (re)connect the subscriptions
// are made again and the open session's topic resumes after the last seq the page holds, so
// nothing is lost and the app drops what it already has.
//
// The link is a plain WebSocket first. Where WebSockets are missing or never carry a STOMP
// session (no `WebSocket` in the window, or the first socket closes before CONNECTED without
// the server refusing us), the page falls back to SockJS at the same /ws (vendored
// sockjs-client, global `SockJS`) and keeps it for every reconnect. SockJS may use only the
// transports below, same-origin WebSocket and XHR, which the page's CSP allows (`connect-src
// 'self'`); its iframe and JSONP transports would need frames and scripts. Not EventSource
// either: sockjs-client 1.6.1 leaves a failed transport's timer armed, and an EventSource that
// keeps failing fast (it retries on network errors) lets the stale timer of the transport
// before it close the long-polling one that comes next, so it would never get there.

const RECEIPT_TIMEOUT_MS = 10000;
const SOCKJS_TRANSPORTS = ["websocket", "xhr-streaming", "xhr-polling"];

export class LiveError extends Error {
  constructor(kind, message) {
    super(message);
    this.kind = kind; // "offline" (not sent) | "timeout" (no receipt: fate unknown)
  }
}

/** The server refused what was sent (an event on /user/queue/error for its receipt). */
export class LiveRefusal extends Error {
  constructor(error) {
    super((error && (error.detail || error.code)) || "refused");
    this.code = (error && error.code) || "REFUSED";
    this.detail = this.message;
  }
}

// Refusals that say "not now" rather than "no": the change goes again (over REST).
const TRANSIENT_CODES = new Set(["UNAVAILABLE", "RATE_LIMITED", "DEPENDENCY_UNAVAILABLE"]);

export class Live {
  /**
   * @param {object} hooks
   * @param {() => string | null} hooks.token the current user token (null: stop)
   * @param {(state: "connecting"|"live"|"offline") => void} hooks.onState (read `transport`
   *   and `sockjsTransport` for what carries it)
   * @param {(event: string, body: any, headers: object) => void} hooks.onEvent
   * @param {() => void} hooks.onConnected after every (re)connect, subscriptions made
   * @param {(sessionId: string) => number} hooks.resumeAfter last contiguous seq held
   * @param {(message: string) => void} hooks.onError a STOMP ERROR frame (but a refused
   *   SUBSCRIBE to a blocked session: the event "blocked" {sessionId}; to a closed one: the
   *   event "closed" {sessionId, state}; and USER_DELETED: `onAccountDeleted`)
   * @param {() => void} hooks.onAccountDeleted the user's account was deleted (ERROR
   *   USER_DELETED): the connection has stopped for good, with no reconnect
   */
  constructor(hooks) {
    this.hooks = hooks;
    this.sessionId = null;
    this.sessionSub = null;
    this.topicAsked = null; // the session of the last topic SUBSCRIBE on this connection
    this.receiptSeq = 0;
    this.awaiting = new Map(); // receipt id -> {resolve, reject, timer} of a change
    // "websocket" until the fallback, then "sockjs" for the rest of the page's life.
    this.transport = typeof window.WebSocket === "function" ? "websocket" : "sockjs";
    this.everConnected = false; // a STOMP session was ever established on this page
    this.refused = false; // the server sent an ERROR frame on the current link
    this.client = new window.StompJs.Client({
      webSocketFactory: () => this.openLink(),
      reconnectDelay: 1000,
      maxReconnectDelay: 15000,
      reconnectTimeMode: window.StompJs.ReconnectionTimeMode.EXPONENTIAL,
      heartbeatIncoming: 10000,
      heartbeatOutgoing: 10000,
      connectionTimeout: 8000,
      debug: () => {},
      beforeConnect: (client) => {
        const token = this.hooks.token();
        if (!token) {
          client.deactivate();
          return;
        }
        // The token goes in the CONNECT frame, not in the URL (URLs end up in logs).
        client.connectHeaders = { Authorization: `Bearer ${token}` };
        this.refused = false;
        this.hooks.onState("connecting");
      },
      onConnect: () => this.onConnect(),
      onStompError: (frame) => {
        this.refused = true;
        const message = frame.headers.message || "STOMP error";
        if (message.includes("USER_DELETED")) {
          // The account is gone: every connection of it is refused from now on. Stop here
          // (the socket is dropped, no DISCONNECT on a link the server is closing).
          this.sessionId = null;
          this.sessionSub = null;
          this.client.deactivate({ force: true });
          this.hooks.onAccountDeleted();
          return;
        }
        const sessionId = this.topicAsked;
        const blocked = message.includes("SESSION_BLOCKED");
        if (sessionId && (blocked || message.includes("SESSION_CLOSED"))) {
          // The topic's SUBSCRIBE was refused: the session is blocked, or closed for good (the
          // app may know it by now and have left it). The connection closes and comes back
          // without it; the app learns who blocks, or the closed state, from the session list.
          if (this.sessionId === sessionId) {
            this.sessionId = null;
            this.sessionSub = null;
          }
          const event = blocked ? "blocked" : "closed";
          this.hooks.onEvent(event, blocked ? { sessionId } : { sessionId, state: "CLOSED" }, frame.headers);
          return;
        }
        this.hooks.onError(message);
      },
      onWebSocketClose: () => {
        this.sessionSub = null;
        this.topicAsked = null;
        // Changes still waiting for their receipt will not get it on this link: their fate is
        // unknown, so they go again (the same clientMessageId) over REST.
        for (const [receipt, waiting] of this.awaiting) {
          clearTimeout(waiting.timer);
          waiting.reject(new LiveError("timeout", "the connection closed"));
          this.awaiting.delete(receipt);
        }
        // A WebSocket that never carried a session, and not because the server said no:
        // something between us and the server (or the browser) does not pass WebSockets.
        if (
          this.transport === "websocket" &&
          !this.everConnected &&
          !this.refused &&
          this.client.active
        ) {
          this.fallBack();
        }
        this.hooks.onState("offline");
      },
    });
  }

  /** The socket for the next connect: a WebSocket, or SockJS after the fallback. */
  openLink() {
    if (this.transport === "websocket") {
      const scheme = location.protocol === "https:" ? "wss:" : "ws:";
      const protocols = this.client.stompVersions.protocolVersions();
      try {
        return new window.WebSocket(`${scheme}//${location.host}/ws`, protocols);
      } catch (err) {
        this.fallBack(); // the browser refused to open one at all
        if (this.transport === "websocket") throw err;
      }
    }
    return new window.SockJS(`${location.origin}/ws`, null, { transports: SOCKJS_TRANSPORTS });
  }

  fallBack() {
    if (typeof window.SockJS === "function") this.transport = "sockjs";
  }

  /** The SockJS transport in use ("xhr-streaming", ...), or null over a plain WebSocket. */
  get sockjsTransport() {
    const link = this.client.webSocket;
    return this.transport === "sockjs" && link && link.transport ? link.transport : null;
  }

  get connected() {
    return this.client.connected;
  }

  start() {
    // Neither link at all (no WebSocket and no SockJS): REST alone, as while offline.
    if (this.transport === "sockjs" && typeof window.SockJS !== "function") {
      this.hooks.onState("offline");
      return;
    }
    this.client.activate();
  }

  async stop() {
    this.sessionId = null;
    this.sessionSub = null;
    if (this.client.active) await this.client.deactivate(); // (not again after USER_DELETED)
    this.hooks.onState("offline");
  }

  onConnect() {
    this.everConnected = true;
    const handler = (fallback) => (frame) => this.dispatch(frame, fallback);
    this.client.subscribe("/user/queue/messages", handler("message"), { id: "user-messages" });
    this.client.subscribe("/user/queue/ack", handler("ack"), { id: "user-ack" });
    this.client.subscribe("/user/queue/error", handler("error"), { id: "user-error" });
    this.client.subscribe("/user/queue/presence", handler("presence"), { id: "user-presence" });
    this.client.subscribe("/user/queue/keys", handler("keys"), { id: "user-keys" });
    this.sessionSub = null;
    if (this.sessionId) this.subscribeSession();
    this.hooks.onState("live");
    this.hooks.onConnected();
  }

  /** Follow one session's topic (null: none); resumes after the seq the page holds. */
  follow(sessionId) {
    if (this.sessionId === sessionId) return;
    if (this.sessionSub && this.client.connected) this.sessionSub.unsubscribe();
    this.sessionSub = null;
    this.sessionId = sessionId;
    if (sessionId && this.client.connected) this.subscribeSession();
  }

  subscribeSession() {
    const sessionId = this.sessionId;
    this.topicAsked = sessionId;
    const sub = this.client.subscribe(
      `/topic/session.${sessionId}`,
      (frame) => {
        // A `block` or `closed` is the subscription's last frame: the id is given back
        // (UNSUBSCRIBE), and the session is not subscribed again until the app follows it
        // after an unblock (never, once closed).
        const event = frame.headers["x-event"];
        if ((event === "block" || event === "closed") && this.sessionSub === sub) {
          sub.unsubscribe();
          this.sessionSub = null;
          this.sessionId = null;
        }
        this.dispatch(frame, "message");
      },
      { id: `session-${sessionId}`, "x-resume-after-seq": String(this.hooks.resumeAfter(sessionId)) },
    );
    this.sessionSub = sub;
  }

  dispatch(frame, fallback) {
    const event = frame.headers["x-event"] || fallback;
    let body;
    try {
      body = JSON.parse(frame.body);
    } catch {
      return; // not ours to understand
    }
    const waiting = fallback === "error" && this.awaiting.get(frame.headers["receipt-id"]);
    if (waiting) {
      // The refusal of a change this page waits for: its caller shows it.
      this.awaiting.delete(frame.headers["receipt-id"]);
      clearTimeout(waiting.timer);
      if (body && TRANSIENT_CODES.has(body.code)) {
        waiting.reject(new LiveError("timeout", body.detail || body.code));
      } else {
        waiting.reject(new LiveRefusal(body));
      }
      return;
    }
    this.hooks.onEvent(event, body, frame.headers);
  }

  /**
   * SEND /app/chat.edit (`kind` "edit", body {sessionId, messageId, content,
   * clientMessageId}) or /app/chat.delete ("delete", without content); resolves on the
   * RECEIPT (the change is committed; the change itself comes on /user/queue/ack). Rejects
   * with LiveRefusal when the server refuses it (its `code`: EDIT_WINDOW_CLOSED, ...), and
   * with LiveError as `send` does when it may go again (same clientMessageId, over REST).
   */
  change(kind, body) {
    if (!this.client.connected) {
      return Promise.reject(new LiveError("offline", "not connected"));
    }
    const receipt = `${kind}-${++this.receiptSeq}-${body.clientMessageId}`;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.awaiting.delete(receipt);
        reject(new LiveError("timeout", "no receipt"));
      }, RECEIPT_TIMEOUT_MS);
      this.awaiting.set(receipt, { resolve, reject, timer });
      this.client.watchForReceipt(receipt, () => {
        if (!this.awaiting.delete(receipt)) return;
        clearTimeout(timer);
        resolve();
      });
      try {
        this.client.publish({
          destination: kind === "edit" ? "/app/chat.edit" : "/app/chat.delete",
          headers: { receipt, "content-type": "application/json" },
          body: JSON.stringify(body),
        });
      } catch (err) {
        this.awaiting.delete(receipt);
        clearTimeout(timer);
        reject(new LiveError("offline", err.message));
      }
    });
  }

  /**
   * SEND /app/chat.send; resolves on the RECEIPT (the message is committed). Rejects with
   * LiveError("offline") when there is no connection (nothing was sent) or
   * LiveError("timeout") when no receipt came in time (resend with the same clientMessageId).
   * With `encrypted` (an envelope) the message is that instead of `content`.
   */
  send(sessionId, content, clientMessageId, encrypted = null) {
    if (!this.client.connected) {
      return Promise.reject(new LiveError("offline", "not connected"));
    }
    const receipt = `send-${++this.receiptSeq}-${clientMessageId}`;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new LiveError("timeout", "no receipt")),
        RECEIPT_TIMEOUT_MS,
      );
      this.client.watchForReceipt(receipt, () => {
        clearTimeout(timer);
        resolve();
      });
      try {
        this.client.publish({
          destination: "/app/chat.send",
          headers: { receipt, "content-type": "application/json" },
          body: JSON.stringify(
            encrypted ? { sessionId, encrypted, clientMessageId } : { sessionId, content, clientMessageId },
          ),
        });
      } catch (err) {
        clearTimeout(timer);
        reject(new LiveError("offline", err.message));
      }
    });
  }

  /** Ephemeral; dropped when not connected. */
  typing(sessionId, typing) {
    if (!this.client.connected) return;
    try {
      this.client.publish({
        destination: "/app/chat.typing",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ sessionId, typing }),
      });
    } catch {
      // the socket closed under us; typing is best effort
    }
  }
}
