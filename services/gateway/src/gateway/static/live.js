// The live connection: STOMP 1.2 over WebSocket at /ws on this origin, with @stomp/stompjs
// (vendored UMD bundle, global `StompJs`). It reconnects by itself; after each (re)connect the
// subscriptions are made again and the open session's topic resumes after the last seq the
// page holds, so nothing is lost and the app drops what it already has.

const RECEIPT_TIMEOUT_MS = 10000;

export class LiveError extends Error {
  constructor(kind, message) {
    super(message);
    this.kind = kind; // "offline" (not sent) | "timeout" (no receipt: fate unknown)
  }
}

export class Live {
  /**
   * @param {object} hooks
   * @param {() => string | null} hooks.token the current user token (null: stop)
   * @param {(state: "connecting"|"live"|"offline") => void} hooks.onState
   * @param {(event: string, body: any, headers: object) => void} hooks.onEvent
   * @param {() => void} hooks.onConnected after every (re)connect, subscriptions made
   * @param {(sessionId: string) => number} hooks.resumeAfter last contiguous seq held
   * @param {(message: string) => void} hooks.onError a STOMP ERROR frame
   */
  constructor(hooks) {
    this.hooks = hooks;
    this.sessionId = null;
    this.sessionSub = null;
    this.receiptSeq = 0;
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    this.client = new window.StompJs.Client({
      brokerURL: `${scheme}//${location.host}/ws`,
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
        this.hooks.onState("connecting");
      },
      onConnect: () => this.onConnect(),
      onStompError: (frame) => this.hooks.onError(frame.headers.message || "STOMP error"),
      onWebSocketClose: () => {
        this.sessionSub = null;
        this.hooks.onState("offline");
      },
    });
  }

  get connected() {
    return this.client.connected;
  }

  start() {
    this.client.activate();
  }

  async stop() {
    this.sessionId = null;
    this.sessionSub = null;
    await this.client.deactivate();
    this.hooks.onState("offline");
  }

  onConnect() {
    const handler = (fallback) => (frame) => this.dispatch(frame, fallback);
    this.client.subscribe("/user/queue/messages", handler("message"), { id: "user-messages" });
    this.client.subscribe("/user/queue/ack", handler("ack"), { id: "user-ack" });
    this.client.subscribe("/user/queue/error", handler("error"), { id: "user-error" });
    this.client.subscribe("/user/queue/presence", handler("presence"), { id: "user-presence" });
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
    this.sessionSub = this.client.subscribe(
      `/topic/session.${sessionId}`,
      (frame) => this.dispatch(frame, "message"),
      { id: `session-${sessionId}`, "x-resume-after-seq": String(this.hooks.resumeAfter(sessionId)) },
    );
  }

  dispatch(frame, fallback) {
    const event = frame.headers["x-event"] || fallback;
    let body;
    try {
      body = JSON.parse(frame.body);
    } catch {
      return; // not ours to understand
    }
    this.hooks.onEvent(event, body, frame.headers);
  }

  /**
   * SEND /app/chat.send; resolves on the RECEIPT (the message is committed). Rejects with
   * LiveError("offline") when there is no connection (nothing was sent) or
   * LiveError("timeout") when no receipt came in time (resend with the same clientMessageId).
   */
  send(sessionId, content, clientMessageId) {
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
          body: JSON.stringify({ sessionId, content, clientMessageId }),
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
