// REST calls to the gateway (same origin). Errors are RFC 9457 problem documents.

export class ApiError extends Error {
  constructor(status, problem, retryAfter) {
    const detail = (problem && (problem.detail || problem.title)) || `HTTP ${status}`;
    super(detail);
    this.status = status; // 0: the network failed, no answer
    this.code = (problem && problem.code) || (status === 0 ? "NETWORK" : "HTTP_ERROR");
    this.detail = detail;
    this.retryAfter = retryAfter; // seconds, from Retry-After on 429/503
  }

  /** Worth trying again later with the same request (idempotent sends included). */
  get transient() {
    return this.status === 0 || this.status === 408 || this.status === 429 || this.status >= 500;
  }
}

export class Api {
  /**
   * @param {() => string | null} token the current user token
   * @param {(error: ApiError) => void} onUnauthorized called on a 401 (token expired or bad),
   *   and on any answer whose code is USER_DELETED (the account is gone)
   */
  constructor(token, onUnauthorized) {
    this.token = token;
    this.onUnauthorized = onUnauthorized;
  }

  async request(method, path, body, { auth = true } = {}) {
    const headers = { Accept: "application/json" };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const token = auth ? this.token() : null;
    if (token) headers.Authorization = `Bearer ${token}`;
    let response;
    try {
      response = await fetch(path, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        cache: "no-store",
        credentials: "omit",
      });
    } catch (err) {
      throw new ApiError(0, { detail: `network error: ${err.message}` });
    }
    let data = null;
    const text = await response.text();
    if (text) {
      try {
        data = JSON.parse(text);
      } catch {
        data = { detail: text.slice(0, 200) };
      }
    }
    if (!response.ok) {
      const retryAfter = Number(response.headers.get("Retry-After")) || undefined;
      const error = new ApiError(response.status, data, retryAfter);
      if (auth && (response.status === 401 || error.code === "USER_DELETED")) this.onUnauthorized(error);
      throw error;
    }
    return { data, headers: response.headers };
  }

  async devToken(email) {
    const { data } = await this.request("POST", "/dev/token", { email }, { auth: false });
    return data.token;
  }

  async init(toEmail, intent) {
    return (await this.request("POST", "/api/chat/init", { toEmail, intent })).data;
  }

  async sessions() {
    return (await this.request("GET", "/api/chat/sessions")).data.sessions;
  }

  /**
   * A page of history, newest first. `next` is the path of the following page (older, or
   * newer with `after`) from the Link header, or null when this page was the last.
   */
  async history(sessionId, { limit = 50, before, after, path } = {}) {
    let url = path;
    if (!url) {
      const query = new URLSearchParams({ limit: String(limit) });
      if (before !== undefined) query.set("before", String(before));
      if (after !== undefined) query.set("after", String(after));
      url = `/api/chat/${encodeURIComponent(sessionId)}/history?${query}`;
    }
    const { data, headers } = await this.request("GET", url);
    return { messages: data.messages, next: nextLink(headers.get("Link")) };
  }

  /**
   * A page of the session's events, oldest first: every seq, a `message` (in its current
   * state) or an `edit` / `delete` (the change). `next` as for history.
   */
  async events(sessionId, { limit = 100, after = 0, path } = {}) {
    let url = path;
    if (!url) {
      const query = new URLSearchParams({ limit: String(limit), after: String(after) });
      url = `/api/chat/${encodeURIComponent(sessionId)}/events?${query}`;
    }
    const { data, headers } = await this.request("GET", url);
    return { events: data.events, next: nextLink(headers.get("Link")) };
  }

  /** Online / last seen of peers (people the caller shares a session with), by email. */
  async presence(emails) {
    const query = new URLSearchParams({ emails: emails.join(",") });
    return (await this.request("GET", `/api/chat/presence?${query}`)).data.presence;
  }

  /** A message: its text, or with `encrypted` (an envelope) that instead. */
  async send(sessionId, content, clientMessageId, encrypted = null) {
    const body = encrypted ? { sessionId, encrypted, clientMessageId } : { sessionId, content, clientMessageId };
    return (await this.request("POST", "/api/chat/message", body)).data;
  }

  /**
   * Edit one of my messages (its new text, or with `encrypted` a new envelope): the change
   * (`MessageChange`, with its own seq).
   */
  async editMessage(sessionId, messageId, content, clientMessageId, encrypted = null) {
    const path = `/api/chat/${encodeURIComponent(sessionId)}/messages/${encodeURIComponent(messageId)}`;
    const body = encrypted ? { encrypted, clientMessageId } : { content, clientMessageId };
    return (await this.request("PATCH", path, body)).data;
  }

  /** Delete one of my messages for everyone: the change (`MessageChange`). */
  async deleteMessage(sessionId, messageId, clientMessageId) {
    const path = `/api/chat/${encodeURIComponent(sessionId)}/messages/${encodeURIComponent(messageId)}`;
    return (await this.request("DELETE", path, { clientMessageId })).data;
  }

  async markRead(sessionId, upToSeq) {
    return (await this.request("POST", `/api/chat/${encodeURIComponent(sessionId)}/read`, { upToSeq })).data;
  }

  async markDelivered(sessionId, upToSeq) {
    return (await this.request("POST", `/api/chat/${encodeURIComponent(sessionId)}/delivered`, { upToSeq })).data;
  }
}

/** The rel="next" target of a Link header, if it is a path on this API. */
export function nextLink(header) {
  if (!header) return null;
  for (const part of header.split(",")) {
    const match = /<([^>]*)>\s*;\s*rel="?next"?/i.exec(part.trim());
    if (match && match[1].startsWith("/api/")) return match[1];
  }
  return null;
}
