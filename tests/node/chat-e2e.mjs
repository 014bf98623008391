// Two users on @stomp/stompjs through the gateway's /ws: subscribe, send over /app/chat.send
// with a receipt, receive on the topic and the user queue, resume after a reconnect.
// Input (environment): WS_URL, SESSION_ID, ALICE_TOKEN, BOB_TOKEN. Prints one JSON line.
import { Client } from "@stomp/stompjs";
import WebSocket from "ws";
import { randomUUID } from "node:crypto";

const { WS_URL, SESSION_ID, ALICE_TOKEN, BOB_TOKEN } = process.env;
const topic = `/topic/session.${SESSION_ID}`;

function connect(token) {
  return new Promise((resolve, reject) => {
    const client = new Client({
      webSocketFactory: () => new WebSocket(WS_URL, ["v12.stomp", "v11.stomp"]),
      connectHeaders: { Authorization: `Bearer ${token}` },
      reconnectDelay: 0,
      heartbeatIncoming: 10000,
      heartbeatOutgoing: 10000,
      onConnect: () => resolve(client),
      onStompError: (frame) => reject(new Error(frame.headers.message)),
      onWebSocketError: () => reject(new Error("websocket error")),
    });
    client.activate();
  });
}

function collect(client, destination, headers = {}) {
  const frames = [];
  const waiters = [];
  client.subscribe(destination, (message) => {
    frames.push(message);
    for (const waiter of waiters.splice(0)) waiter();
  }, headers);
  return {
    frames,
    async until(count, ms = 10000) {
      const deadline = Date.now() + ms;
      while (frames.length < count) {
        if (Date.now() > deadline) throw new Error(`only ${frames.length}/${count} on ${destination}`);
        await new Promise((r) => { waiters.push(r); setTimeout(r, 100); });
      }
      return frames;
    },
  };
}

function sendWithReceipt(client, body) {
  const receipt = `r-${randomUUID()}`;
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error("no receipt")), 10000);
    client.watchForReceipt(receipt, () => { clearTimeout(timer); resolve(receipt); });
    client.publish({ destination: "/app/chat.send", headers: { receipt }, body: JSON.stringify(body) });
  });
}

const result = {};
try {
  const alice = await connect(ALICE_TOKEN);
  const bob = await connect(BOB_TOKEN);
  const bobTopic = collect(bob, topic);
  const bobQueue = collect(bob, "/user/queue/messages");
  const aliceAck = collect(alice, "/user/queue/ack");
  await new Promise((r) => setTimeout(r, 300));
  const sent = [];
  for (let i = 0; i < 3; i++) {
    const body = { sessionId: SESSION_ID, content: `stompjs ${i}`, clientMessageId: randomUUID() };
    await sendWithReceipt(alice, body);
    sent.push(body.clientMessageId);
  }
  result.receipts = sent.length;
  const topicFrames = await bobTopic.until(3);
  await bobQueue.until(3);
  await aliceAck.until(3);
  result.topic = topicFrames.map((m) => JSON.parse(m.body).clientMessageId);
  result.seqs = topicFrames.map((m) => Number(m.headers["x-seq"]));
  result.headers = topicFrames[0].headers["x-event"] + "," + topicFrames[0].headers["content-type"];
  const lastSeq = result.seqs[result.seqs.length - 1];
  await bob.deactivate();
  for (let i = 3; i < 6; i++) {
    await sendWithReceipt(alice, { sessionId: SESSION_ID, content: `stompjs ${i}`, clientMessageId: randomUUID() });
  }
  const again = await connect(BOB_TOKEN);
  const resumed = collect(again, topic, { "x-resume-after-seq": String(lastSeq) });
  result.resumed = (await resumed.until(3)).map((m) => Number(m.headers["x-seq"]));
  await again.deactivate();
  await alice.deactivate();
  result.ok = true;
} catch (error) {
  result.ok = false;
  result.error = String(error);
}
console.log(JSON.stringify(result));
process.exit(result.ok ? 0 : 1);
