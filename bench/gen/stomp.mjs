// The little of STOMP 1.2 the load generator needs, on Buffers: frames written as text, frames
// read out of WebSocket messages (several per message, or one split over messages), and the
// benchmark's marker picked out of a MESSAGE without decoding its JSON body.

const NUL = 0;
const LF = 10;
const CR = 13;
const BLANK = Buffer.from('\n\n');
const BLANK_CRLF = Buffer.from('\r\n\r\n');
const MARK = Buffer.from('bench:');

export function frame(command, headers, body = '') {
  let text = command + '\n';
  for (const [name, value] of headers) text += `${name}:${value}\n`;
  return text + '\n' + body + '\0';
}

// A frame as read: command, the headers the generator looks at, the body (a Buffer view).
export class Frame {
  constructor(command, headers, body) {
    this.command = command;
    this.headers = headers;
    this.body = body;
  }

  header(name) {
    return this.headers.get(name);
  }
}

// Frames out of a byte stream. feed() returns the frames completed by a chunk.
export class FrameReader {
  constructor() {
    this.pending = null;
  }

  feed(chunk) {
    const buf = this.pending === null ? chunk : Buffer.concat([this.pending, chunk]);
    this.pending = null;
    const frames = [];
    let pos = 0;
    while (pos < buf.length) {
      while (pos < buf.length && (buf[pos] === LF || buf[pos] === CR)) pos++; // heart-beats
      if (pos >= buf.length) break;
      let end = buf.indexOf(BLANK, pos);
      let skip = 2;
      const crlf = buf.indexOf(BLANK_CRLF, pos);
      if (crlf !== -1 && (end === -1 || crlf < end)) {
        end = crlf;
        skip = 4;
      }
      if (end === -1) break;
      const lines = buf.toString('utf8', pos, end).split('\n');
      const command = lines[0].replace(/\r$/, '');
      const headers = new Map();
      for (let i = 1; i < lines.length; i++) {
        const line = lines[i].replace(/\r$/, '');
        const colon = line.indexOf(':');
        if (colon > 0 && !headers.has(line.slice(0, colon))) {
          headers.set(line.slice(0, colon), line.slice(colon + 1));
        }
      }
      const start = end + skip;
      const length = headers.get('content-length');
      let stop;
      if (length !== undefined) {
        stop = start + Number(length);
        if (stop >= buf.length) break;
      } else {
        stop = buf.indexOf(NUL, start);
        if (stop === -1) break;
      }
      frames.push(new Frame(command, headers, buf.subarray(start, stop)));
      pos = stop + 1;
    }
    if (pos < buf.length) this.pending = Buffer.from(buf.subarray(pos));
    return frames;
  }
}

// The marker "bench:<run>:<session>:<number>" in a body (the body itself on a plain broker,
// a JSON string inside the stack's message): [run, session, number], or null.
export function marker(body) {
  const at = body.indexOf(MARK);
  if (at === -1) return null;
  let end = at + MARK.length;
  while (end < body.length && body[end] !== 34 /* " */ && body[end] !== NUL) end++;
  const parts = body.toString('latin1', at + MARK.length, end).split(':');
  if (parts.length !== 3) return null;
  return [parts[0], Number(parts[1]), Number(parts[2])];
}

export function markerText(run, session, number) {
  return `bench:${run}:${session}:${number}`;
}
