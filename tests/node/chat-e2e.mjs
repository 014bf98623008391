// @stomp/stompjs, unmodified, under Node.js against the chat stack. One case per run:
//   node chat-e2e.mjs send      /app/chat.send with receipts (each RECEIPT after the commit),
//                               then delivered on the topic, /user/queue/messages and the ack queue
//   node chat-e2e.mjs rest      a message sent over REST reaches the topic and the user queue
//   node chat-e2e.mjs resume    a reconnect with x-resume-after-seq misses nothing, repeats nothing
//   node chat-e2e.mjs refused   a non-participant's SUBSCRIBE is answered with an ERROR frame
//   node chat-e2e.mjs edges     a send through one ws-edge reaches a client of another edge
//   node chat-e2e.mjs idle      both stay connected for IDLE_MS with nothing but heart-beats,
//                               then a send still goes both ways
//   node chat-e2e.mjs limit     MAX_CONNECTIONS connections of one user open; the next is refused
// Input (environment): WS_URL (the gateway's /ws), GATEWAY_URL, SESSION_ID, ALICE_TOKEN,
// BOB_TOKEN, EVE_TOKEN (refused), EDGE2_URL (edges: a second ws-edge's /ws).
// With SOCKJS_TRANSPORT set (websocket, xhr-streaming, xhr-polling, eventsource), every
// connection is sockjs-client, unmodified, on that transport alone, at SOCKJS_URL (http://.../ws;
// EDGE2_URL is then the second edge's http://.../ws too); SOCKJS_QUERY_TOKEN=1 puts the token in
// the URL (?access_token=) instead of the CONNECT frame.
// Prints one JSON line (what was observed); exits 1 when a step failed or timed out.
import { Client } from "@stomp/stompjs";
import WebSocket from "ws";
import SockJS from "sockjs-client";
import { randomUUID } from "node:crypto";

const env = process.env;
const SESSION_ID = env.SESSION_ID;
const topic = `/topic/session.${SESSION_ID}`;
const WAIT_MS = 10000;

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function withTimeout(promise, what, ms = WAIT_MS) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out: ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

// Connects; resolves once CONNECTED arrives. `errors` collects ERROR frames after that and
// `closed` resolves with the close code when the socket closes.
const TRANSPORT = env.SOCKJS_TRANSPORT;

function socketFactory(token, url) {
  if (!TRANSPORT) return () => new WebSocket(url, ["v12.stomp", "v11.stomp"]);
  const base = url ?? env.SOCKJS_URL;
  const full = env.SOCKJS_QUERY_TOKEN === "1" ? `${base}?access_token=${encodeURIComponent(token)}` : base;
  return () => new SockJS(full, null, { transports: [TRANSPORT] });
}

function connect(token, url = TRANSPORT ? undefined : env.WS_URL) {
  const errors = [];
  let closedWith;
  const closed = new Promise((r) => { closedWith = r; });
  const connected = new Promise((resolve, reject) => {
    let open = false;
    const client = new Client({
      webSocketFactory: socketFactory(token, url),
      connectHeaders: env.SOCKJS_QUERY_TOKEN === "1" ? {} : { Authorization: `Bearer ${token}` },
      reconnectDelay: 0,
      heartbeatIncoming: 10000,
      heartbeatOutgoing: 10000,
      onConnect: (frame) => { open = true; resolve({ client, errors, closed, connected: frame }); },
      onStompError: (frame) => {
        errors.push(frame);
        if (!open) reject(new Error(`CONNECT refused: ${frame.headers.message}`));
      },
      onWebSocketClose: (event) => {
        closedWith(event.code);
        if (!open) reject(new Error(`socket closed before CONNECTED (${event.code})`));
      },
    });
    client.activate();
  });
  return withTimeout(connected, `CONNECT to ${url}`);
}

function watchReceipt(client, receipt) {
  return withTimeout(new Promise((resolve) => client.watchForReceipt(receipt, resolve)), `RECEIPT ${receipt}`);
}

// Subscribes with a receipt and waits for it (the server answers once the subscription is
// bound); `until(n)` waits for n MESSAGE frames, `frames` holds all of them.
async function collect(client, destination, headers = {}) {
  const frames = [];
  const waiters = [];
  const receipt = `sub-${randomUUID()}`;
  const subscribed = watchReceipt(client, receipt);
  client.subscribe(destination, (message) => {
    frames.push(message);
    for (const waiter of waiters.splice(0)) waiter();
  }, { ...headers, receipt });
  await subscribed;
  return {
    frames,
    async until(count, ms = WAIT_MS) {
      const deadline = Date.now() + ms;
      while (frames.length < count) {
        if (Date.now() > deadline) throw new Error(`only ${frames.length}/${count} on ${destination}`);
        await new Promise((r) => { waiters.push(r); setTimeout(r, 100); });
      }
      return frames.slice(0, count);
    },
  };
}

async function sendWithReceipt(client, content) {
  const clientMessageId = randomUUID();
  const receipt = `r-${clientMessageId}`;
  const receipted = watchReceipt(client, receipt);
  client.publish({
    destination: "/app/chat.send",
    headers: { receipt, "content-type": "application/json" },
    body: JSON.stringify({ sessionId: SESSION_ID, content, clientMessageId }),
  });
  await receipted;
  return clientMessageId;
}

async function rest(method, path, token, body) {
  const answer = await withTimeout(fetch(`${env.GATEWAY_URL}${path}`, {
    method,
    headers: { Authorization: `Bearer ${token}`, "Content-Type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  }), `${method} ${path}`);
  if (answer.status !== 200) throw new Error(`${method} ${path}: ${answer.status} ${await answer.text()}`);
  return answer.json();
}

const restSend = (token, content) =>
  rest("POST", "/api/chat/message", token, { sessionId: SESSION_ID, content, clientMessageId: randomUUID() });

const parsed = (frames) => frames.map((m) => JSON.parse(m.body));
const seqsOf = (frames) => frames.map((m) => Number(m.headers["x-seq"]));

const cases = {
  async send(result, open) {
    const alice = await open(env.ALICE_TOKEN);
    const bob = await open(env.BOB_TOKEN);
    const bobTopic = await collect(bob.client, topic);
    const bobQueue = await collect(bob.client, "/user/queue/messages");
    const aliceAck = await collect(alice.client, "/user/queue/ack");
    result.heartBeat = alice.connected.headers["heart-beat"];
    result.version = alice.connected.headers.version;
    result.sent = [];
    result.committedAtReceipt = [];
    for (let i = 0; i < 3; i++) {
      const cid = await sendWithReceipt(alice.client, `stompjs ${i}`);
      result.sent.push(cid);
      // The RECEIPT means committed: the very next read sees the message.
      const history = await rest("GET", `/api/chat/${SESSION_ID}/history?limit=200`, env.BOB_TOKEN);
      result.committedAtReceipt.push(history.messages.some((m) => m.clientMessageId === cid));
    }
    const topicFrames = await bobTopic.until(3);
    result.topic = parsed(topicFrames).map((m) => m.clientMessageId);
    result.queue = parsed(await bobQueue.until(3)).map((m) => m.clientMessageId);
    result.ack = parsed(await aliceAck.until(3)).map((m) => m.clientMessageId);
    result.seqs = seqsOf(topicFrames);
    result.headers = topicFrames[0].headers["x-event"] + "," + topicFrames[0].headers["content-type"];
  },

  async rest(result, open) {
    const bob = await open(env.BOB_TOKEN);
    const bobTopic = await collect(bob.client, topic);
    const bobQueue = await collect(bob.client, "/user/queue/messages");
    const sent = await restSend(env.ALICE_TOKEN, "hello from REST");
    result.sent = { messageId: sent.messageId, seq: sent.seq };
    const [onTopic] = await bobTopic.until(1);
    const [onQueue] = await bobQueue.until(1);
    result.topic = {
      messageId: JSON.parse(onTopic.body).messageId,
      content: JSON.parse(onTopic.body).content,
      seq: Number(onTopic.headers["x-seq"]),
      event: onTopic.headers["x-event"],
      sessionHeader: onTopic.headers["x-session-id"],
      destination: onTopic.headers.destination,
    };
    result.queue = {
      messageId: JSON.parse(onQueue.body).messageId,
      destination: onQueue.headers.destination,
    };
  },

  async resume(result, open) {
    const alice = await open(env.ALICE_TOKEN);
    const bob = await open(env.BOB_TOKEN);
    const bobTopic = await collect(bob.client, topic);
    await sendWithReceipt(alice.client, "m1");
    const [first] = await bobTopic.until(1);
    result.lastSeen = Number(first.headers["x-seq"]);
    await bob.client.deactivate();
    for (let i = 2; i < 8; i++) {  // while bob is away: over STOMP and over REST, alternately
      if (i % 2) await restSend(env.ALICE_TOKEN, `m${i}`);
      else await sendWithReceipt(alice.client, `m${i}`);
    }
    const again = await open(env.BOB_TOKEN);
    const resumed = await collect(again.client, topic, { "x-resume-after-seq": String(result.lastSeen) });
    for (let i = 8; i < 12; i++) {  // live ones, racing the replay
      if (i % 2) await restSend(env.ALICE_TOKEN, `m${i}`);
      else await sendWithReceipt(alice.client, `m${i}`);
    }
    await resumed.until(10, 20000);
    await sleep(1000);  // anything repeated would arrive now
    result.resumed = seqsOf(resumed.frames);
    result.contents = parsed(resumed.frames).map((m) => m.content);
    result.messageIds = parsed(resumed.frames).map((m) => m.messageId);
  },

  async refused(result, open) {
    const eve = await open(env.EVE_TOKEN);
    let receipted = false;
    eve.client.watchForReceipt("eve-sub", () => { receipted = true; });
    eve.client.subscribe(topic, () => { result.messages = (result.messages ?? 0) + 1; }, { receipt: "eve-sub" });
    result.closeCode = await withTimeout(eve.closed, "the socket to close after the ERROR");
    result.errors = eve.errors.map((f) => ({ command: f.command, message: f.headers.message }));
    result.receipted = receipted;
  },

  async edges(result, open) {
    const alice = await open(env.ALICE_TOKEN);  // through the gateway: the first edge
    const bob = await open(env.BOB_TOKEN, env.EDGE2_URL);  // straight to the second edge
    const aliceTopic = await collect(alice.client, topic);
    const bobTopic = await collect(bob.client, topic);
    const bobQueue = await collect(bob.client, "/user/queue/messages");
    result.sent = await sendWithReceipt(alice.client, "from edge 1");
    result.bobTopic = parsed(await bobTopic.until(1)).map((m) => m.clientMessageId);
    result.bobQueue = parsed(await bobQueue.until(1)).map((m) => m.clientMessageId);
    result.reply = await sendWithReceipt(bob.client, "from edge 2");
    result.aliceTopic = parsed(await aliceTopic.until(2)).map((m) => m.clientMessageId);
  },
};

cases.idle = async (result, open) => {
  const alice = await open(env.ALICE_TOKEN);
  const bob = await open(env.BOB_TOKEN);
  const bobTopic = await collect(bob.client, topic);
  let closed = 0;
  alice.closed.then(() => { closed += 1; });
  bob.closed.then(() => { closed += 1; });
  await sleep(Number(env.IDLE_MS ?? 25000));
  result.closedWhileIdle = closed;
  result.sent = await sendWithReceipt(alice.client, "after a quiet while");
  result.received = parsed(await bobTopic.until(1)).map((m) => m.clientMessageId);
};

cases.limit = async (result, open) => {
  const allowed = Number(env.MAX_CONNECTIONS);
  for (let i = 0; i < allowed; i++) await open(env.ALICE_TOKEN);
  result.opened = allowed;
  try {
    await open(env.ALICE_TOKEN);
    result.extra = "connected";
  } catch (error) {
    result.extra = String(error);
  }
};

const name = process.argv[2];
const result = { case: name };
const opened = [];
const open = async (token, url) => {
  const connection = await connect(token, url);
  opened.push(connection.client);
  return connection;
};
try {
  if (!(name in cases)) throw new Error(`unknown case ${name}; one of ${Object.keys(cases)}`);
  await cases[name](result, open);
  result.ok = true;
} catch (error) {
  result.ok = false;
  result.error = String(error);
}
await Promise.allSettled(opened.map((client) => withTimeout(client.deactivate(), "deactivate", 5000)));
console.log(JSON.stringify(result));
process.exit(result.ok ? 0 : 1);
