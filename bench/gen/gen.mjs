// The benchmark's load generator: open loop, light, driven over stdin/stdout by bench/run.py.
//
//   node gen.mjs CONFIG.json
//
// It opens every connection of its sessions (two receivers per session subscribed to the
// session's destination, and the senders of the mode), prints {"event":"ready"}, then runs
// each {"cmd":"run",...} line it reads: message n is due at startAt + n / rate (epoch ms) and
// is sent then, whatever is still in flight (only a large safety cap can hold a send back, and
// each time it does is counted). Sends go round robin over the sessions. When the schedule is
// done and everything acknowledged has reached both receivers (or the drain time is over) it
// prints {"event":"result",...}: raw records, times in ms from startAt; bench/accounting.py
// counts them. {"cmd":"quit"} closes everything.
//
// Modes: "webstomp" (a plain broker: the second receiver of a session publishes to the
// destination), "stomp" (SEND /app/chat.send with a receipt on a sender connection per
// session, pipelined), "rest" (POST /api/chat/message over a keep-alive pool).

import { readFileSync } from 'node:fs';
import { randomUUID } from 'node:crypto';
import { createInterface } from 'node:readline';
import { Pool } from 'undici';
import WebSocket from 'ws';
import { FrameReader, frame, marker, markerText } from './stomp.mjs';

const config = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const now = () => performance.timeOrigin + performance.now();
const emit = (value) => process.stdout.write(JSON.stringify(value) + '\n');

// -- STOMP connections ----------------------------------------------------------------------

class Connection {
  constructor(ws, label) {
    this.ws = ws;
    this.label = label;
    this.reader = new FrameReader();
    this.receipts = new Map(); // receipt id -> callback(ok, detail)
    this.onMessage = null;
    this.closed = false;
    this.connected = null;
  }

  static open(url, { headers = {}, connectHeaders = [] }, label) {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(url, ['v12.stomp'], { headers, perMessageDeflate: false });
      const conn = new Connection(ws, label);
      const timer = setTimeout(() => reject(new Error(`${label}: no CONNECTED in 15 s`)), 15000);
      conn.connected = (ok, detail) => {
        clearTimeout(timer);
        if (ok) resolve(conn);
        else reject(new Error(`${label}: ${detail}`));
      };
      ws.on('open', () => {
        ws.send(
          frame('CONNECT', [['accept-version', '1.2'], ['host', '/'], ['heart-beat', '0,0'], ...connectHeaders]),
        );
      });
      ws.on('message', (data) => conn.data(data));
      ws.on('error', (error) => {
        if (conn.connected) conn.connected(false, String(error.message || error));
      });
      ws.on('close', (code, reason) => conn.lost(`closed ${code} ${reason}`));
    });
  }

  data(chunk) {
    for (const f of this.reader.feed(chunk)) {
      if (f.command === 'MESSAGE') {
        if (this.onMessage) this.onMessage(f);
      } else if (f.command === 'RECEIPT') {
        const id = f.header('receipt-id');
        const callback = this.receipts.get(id);
        if (callback) {
          this.receipts.delete(id);
          callback(true);
        }
      } else if (f.command === 'CONNECTED') {
        const callback = this.connected;
        this.connected = null;
        if (callback) callback(true);
      } else if (f.command === 'ERROR') {
        const detail = `ERROR ${f.header('message') || ''}`;
        if (this.connected) this.connected(false, detail);
        this.lost(detail);
      }
    }
  }

  lost(detail) {
    if (this.closed) return;
    this.closed = true;
    this.closeDetail = detail;
    for (const callback of this.receipts.values()) callback(false, detail);
    this.receipts.clear();
    if (this.onLost) this.onLost(detail);
  }

  send(text, callback) {
    this.ws.send(text, callback);
  }

  subscribe(id, destination) {
    return new Promise((resolve, reject) => {
      const receipt = `sub-${id}`;
      this.receipts.set(receipt, (ok, detail) =>
        ok ? resolve() : reject(new Error(`${this.label}: SUBSCRIBE ${destination}: ${detail}`)),
      );
      this.send(frame('SUBSCRIBE', [['id', id], ['destination', destination], ['receipt', receipt]]));
    });
  }

  close() {
    this.closed = true;
    try {
      this.ws.close();
    } catch {
      // already closed
    }
  }
}

async function inBatches(items, size, job) {
  const out = [];
  for (let i = 0; i < items.length; i += size) {
    out.push(...(await Promise.all(items.slice(i, i + size).map(job))));
  }
  return out;
}

// -- the run's records ------------------------------------------------------------------------

let run = null; // the current run's state

function newRun(command) {
  const total = Math.round(command.rate * (command.warmup + command.seconds));
  return {
    id: command.run,
    startAt: command.startAt,
    interval: 1000 / command.rate,
    total,
    drain: command.drain * 1000,
    next: 0,
    inFlight: 0,
    peakInFlight: 0,
    capWaits: 0,
    capBlocked: false,
    acked: 0,
    settled: 0,
    delivered: 0,
    timer: null,
    done: null,
    sends: { s: new Array(total), n: new Array(total), sched: new Array(total), ack: new Array(total).fill(null) },
    lag: new Float64Array(total),
    deliveries: { r: [], s: [], n: [], order: [], at: [] },
    errors: {},
  };
}

function noteError(kind) {
  if (run) run.errors[kind] = (run.errors[kind] || 0) + 1;
}

function settle(n, ok, kind) {
  const r = run;
  if (r === null || r.sends.ack[n] !== null) return;
  r.sends.ack[n] = ok ? now() - r.startAt : -1;
  r.inFlight--;
  r.settled++;
  if (ok) r.acked++;
  else noteError(kind || 'send failed');
  if (r.capBlocked) pump();
  finishIfDone();
}

function delivered(receiver, f) {
  const r = run;
  if (r === null) return;
  const found = marker(f.body);
  if (found === null || found[0] !== r.id) return;
  const order = config.mode === 'webstomp' ? found[2] : Number(f.header('x-seq'));
  const d = r.deliveries;
  d.r.push(receiver);
  d.s.push(found[1]);
  d.n.push(found[2]);
  d.order.push(order);
  d.at.push(now() - r.startAt);
  r.delivered++;
  finishIfDone();
}

function finishIfDone() {
  const r = run;
  if (r === null || r.done === null) return;
  if (r.next >= r.total && r.settled >= r.total && r.delivered >= 2 * r.acked) r.done();
}

// -- senders ------------------------------------------------------------------------------------

const sessions = config.sessions;
const cap = config.inFlightCap || 20000;
let senders = []; // per session: the connection that sends (webstomp, stomp)
let pool = null;

function fire(n) {
  const r = run;
  const session = sessions[n % sessions.length];
  const text = markerText(r.id, session.index, n);
  if (config.mode === 'rest') {
    const body = `{"sessionId":"${session.id}","content":"${text}","clientMessageId":"${randomUUID()}"}`;
    pool
      .request({
        method: 'POST',
        path: '/api/chat/message',
        headers: { authorization: `Bearer ${session.tokens[n % 2]}`, 'content-type': 'application/json' },
        body,
      })
      .then(
        async ({ statusCode, body: answer }) => {
          await answer.dump();
          settle(n, statusCode === 200, `HTTP ${statusCode}`);
        },
        (error) => settle(n, false, `HTTP ${error.code || error.message}`),
      );
    return;
  }
  const conn = senders[n % sessions.length];
  if (conn.closed) {
    settle(n, false, `sender ${conn.closeDetail}`);
    return;
  }
  if (config.mode === 'webstomp') {
    const headers = [['destination', session.destination], ['content-type', 'text/plain'], ['content-length', text.length]];
    conn.send(frame('SEND', headers, text), (error) => settle(n, !error, 'write failed'));
    return;
  }
  const body = `{"sessionId":"${session.id}","content":"${text}","clientMessageId":"${randomUUID()}"}`;
  const receipt = `${r.id}-${n}`;
  conn.receipts.set(receipt, (ok, detail) => settle(n, ok, detail));
  const headers = [
    ['destination', '/app/chat.send'],
    ['content-type', 'application/json'],
    ['content-length', Buffer.byteLength(body)],
    ['receipt', receipt],
  ];
  conn.send(frame('SEND', headers, body));
}

function pump() {
  const r = run;
  if (r === null) return;
  if (r.timer !== null) {
    clearTimeout(r.timer);
    r.timer = null;
  }
  const t = now();
  while (r.next < r.total) {
    const due = r.startAt + r.next * r.interval;
    if (due > t) break;
    if (r.inFlight >= cap) {
      if (!r.capBlocked) r.capWaits++;
      r.capBlocked = true;
      return; // a settled send pumps again
    }
    r.capBlocked = false;
    const n = r.next++;
    const session = sessions[n % sessions.length];
    r.sends.s[n] = session.index;
    r.sends.n[n] = n;
    r.sends.sched[n] = due - r.startAt;
    r.lag[n] = t - due;
    r.inFlight++;
    if (r.inFlight > r.peakInFlight) r.peakInFlight = r.inFlight;
    fire(n);
  }
  if (r.next < r.total) {
    const wait = r.startAt + r.next * r.interval - now();
    r.timer = setTimeout(pump, Math.max(0, wait));
  } else finishIfDone();
}

function quantile(values, q) {
  if (values.length === 0) return null;
  const sorted = Float64Array.from(values).sort();
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
}

async function runOnce(command) {
  run = newRun(command);
  const r = run;
  const finished = new Promise((resolve) => {
    r.done = resolve;
  });
  const scheduleEnd = r.startAt + r.total * r.interval;
  r.timer = setTimeout(pump, Math.max(0, r.startAt - now()));
  const deadline = new Promise((resolve) => {
    const check = () => {
      const left = scheduleEnd + r.drain - now();
      if (left <= 0) resolve();
      else setTimeout(check, Math.min(left, 250));
    };
    check();
  });
  await Promise.race([finished, deadline]);
  if (r.timer !== null) clearTimeout(r.timer);
  run = null;
  const fired = r.next;
  emit({
    event: 'result',
    run: r.id,
    sends: {
      s: r.sends.s.slice(0, fired),
      n: r.sends.n.slice(0, fired),
      sched: r.sends.sched.slice(0, fired),
      ack: r.sends.ack.slice(0, fired),
    },
    deliveries: r.deliveries,
    unsent: r.total - fired,
    peakInFlight: r.peakInFlight,
    capWaits: r.capWaits,
    lagP50: quantile(r.lag.subarray(0, fired), 0.5),
    lagP99: quantile(r.lag.subarray(0, fired), 0.99),
    lagMax: quantile(r.lag.subarray(0, fired), 1),
    errors: r.errors,
  });
}

// -- setup and the control loop ----------------------------------------------------------------

const receivers = [];

async function setup() {
  const stack = config.mode !== 'webstomp';
  const opts = (token) => ({
    headers: token ? { authorization: `Bearer ${token}` } : {},
    connectHeaders: config.connectHeaders || [],
  });
  const pairs = sessions.flatMap((session) => [0, 1].map((which) => [session, which]));
  const opened = await inBatches(pairs, 20, async ([session, which]) => {
    const conn = await Connection.open(
      config.wsUrl,
      opts(stack ? session.tokens[which] : null),
      `receiver ${session.index}/${which}`,
    );
    await conn.subscribe('0', session.destination);
    const index = session.index * 2 + which;
    conn.onMessage = (f) => delivered(index, f);
    conn.onLost = (detail) => noteError(`receiver ${detail}`);
    return conn;
  });
  receivers.push(...opened);
  if (config.mode === 'webstomp') {
    senders = sessions.map((_, i) => opened[i * 2 + 1]);
  } else if (config.mode === 'stomp') {
    senders = await inBatches(sessions, 20, async (session) => {
      const conn = await Connection.open(config.wsUrl, opts(session.tokens[0]), `sender ${session.index}`);
      await conn.subscribe('errors', '/user/queue/error'); // a refused SEND: its receipt-id
      conn.onMessage = (f) => {
        const receipt = f.header('receipt-id');
        const callback = receipt && conn.receipts.get(receipt);
        if (callback) {
          conn.receipts.delete(receipt);
          callback(false, 'refused');
        }
      };
      return conn;
    });
  } else {
    pool = new Pool(config.httpUrl, {
      connections: config.httpConnections || 256,
      pipelining: 1,
      keepAliveTimeout: 60000,
    });
  }
}

async function main() {
  try {
    await setup();
  } catch (error) {
    emit({ event: 'failed', detail: String(error.message || error) });
    process.exit(1);
  }
  emit({ event: 'ready', pid: process.pid });
  const lines = createInterface({ input: process.stdin });
  for await (const line of lines) {
    if (!line.trim()) continue;
    const command = JSON.parse(line);
    if (command.cmd === 'run') await runOnce(command);
    else if (command.cmd === 'quit') break;
  }
  for (const conn of [...receivers, ...senders]) conn.close();
  if (pool) await pool.close();
  process.exit(0);
}

main();
