// End-to-end encryption of messages with WebCrypto: the scheme, nothing else (no DOM, no
// network). The envelope is the server's `Envelope` as it is (docs/decisions.md, "Encrypted
// messages"); the server stores it unread.
//
// Scheme "ECDH-P256-HKDF-SHA256+A256GCM":
// - each device has an ECDH P-256 key pair; the private key is made non-extractable and never
//   leaves the browser (keystore.js keeps it in IndexedDB); the public key is published raw
//   (65 bytes, the uncompressed point) as `ECDH-P256`;
// - per message a random 256-bit content key encrypts the UTF-8 text once with AES-256-GCM
//   (random 96-bit `nonce`; additional data: the scheme's label and the session id, so that
//   an envelope copied into another session does not open there);
// - per message one ephemeral P-256 key pair; for each recipient device (both participants'
//   current keys, this device and the sender's other devices included) the key-encryption key
//   is HKDF-SHA-256 (salt: ephemeral public key || recipient public key, info: a fixed label)
//   of ECDH(ephemeral private, recipient public), and the content key is sealed with
//   AES-256-GCM under it (a zero IV: each key-encryption key seals exactly one content key;
//   additional data: the recipient's email and keyId). `wrappedKey` = ephemeral public key
//   (65 bytes) || sealed content key (48 bytes), base64url.
// There is no signature: anyone who holds the recipients' public keys (the server included)
// can make an envelope that opens; docs/threat-model.md says what that means.

export const ALG = "ECDH-P256-HKDF-SHA256+A256GCM";
export const KEY_ALGORITHM = "ECDH-P256";

const CURVE = { name: "ECDH", namedCurve: "P-256" };
const RAW_PUBLIC_BYTES = 65;
const CONTENT_AAD = "chat-e2ee/v1 message\n";
const WRAP_INFO = new TextEncoder().encode("chat-e2ee/v1 content key");
const ZERO_IV = new Uint8Array(12);
const encoder = new TextEncoder();
const decoder = new TextDecoder("utf-8", { fatal: true });

/** Why a message does not open; `reason` is what the page shows. */
export class DecryptError extends Error {
  constructor(kind, reason) {
    super(reason);
    this.kind = kind; // "no-key" | "scheme" | "damaged"
    this.reason = reason;
  }
}

/** Whether this browser can do it at all (WebCrypto needs a secure context; keys, IndexedDB). */
export function supported() {
  return Boolean(globalThis.crypto && globalThis.crypto.subtle && globalThis.indexedDB);
}

// ---- encodings -------------------------------------------------------------------------------

/** Base64url without padding (the server's one canonical spelling). */
export function b64url(bytes) {
  const view = bytes instanceof Uint8Array ? bytes : new Uint8Array(bytes);
  let binary = "";
  for (let i = 0; i < view.length; i += 0x8000) {
    binary += String.fromCharCode(...view.subarray(i, i + 0x8000));
  }
  return btoa(binary).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

export function unb64url(text) {
  if (typeof text !== "string" || !/^[A-Za-z0-9_-]*$/.test(text)) throw new Error("not base64url");
  const b64 = text.replace(/-/g, "+").replace(/_/g, "/").padEnd(Math.ceil(text.length / 4) * 4, "=");
  return Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
}

function concat(...parts) {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/** SHA-256 of a raw public key, lower-case hex in 16 groups of 4 (as the server reports it). */
export async function fingerprint(raw) {
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", raw));
  const hex = [...digest].map((b) => b.toString(16).padStart(2, "0")).join("");
  return hex.match(/.{4}/g).join(" ");
}

// ---- keys ------------------------------------------------------------------------------------

/** A new device key pair: the private key cannot be exported, the public one can. */
export function newDeviceKey() {
  return crypto.subtle.generateKey(CURVE, false, ["deriveBits"]);
}

export async function rawPublicKey(publicKey) {
  return new Uint8Array(await crypto.subtle.exportKey("raw", publicKey));
}

/** A random key id for the registry: nothing personal in it (the server sees it). */
export function newKeyId() {
  return `web-${b64url(crypto.getRandomValues(new Uint8Array(9)))}`;
}

async function keyEncryptionKey(privateKey, peerRaw, ephemeralRaw, recipientRaw) {
  const peer = await crypto.subtle.importKey("raw", peerRaw, CURVE, false, []);
  const shared = await crypto.subtle.deriveBits({ name: "ECDH", public: peer }, privateKey, 256);
  const hkdf = await crypto.subtle.importKey("raw", shared, "HKDF", false, ["deriveKey"]);
  return crypto.subtle.deriveKey(
    { name: "HKDF", hash: "SHA-256", salt: concat(ephemeralRaw, recipientRaw), info: WRAP_INFO },
    hkdf,
    { name: "AES-GCM", length: 256 },
    false,
    ["encrypt", "decrypt"],
  );
}

const recipientAad = (email, keyId) => encoder.encode(`${String(email).toLowerCase()}\n${keyId}`);
const contentAad = (sessionId) => encoder.encode(CONTENT_AAD + sessionId);

// ---- envelopes -------------------------------------------------------------------------------

/**
 * Encrypts `text` for every device in `recipients` ([{email, keyId, publicKey}], publicKey the
 * registry's base64url raw key): the envelope to send as `encrypted`.
 */
export async function seal(text, { sessionId, senderKeyId, recipients }) {
  if (!recipients.length) throw new Error("no device to encrypt for");
  const contentRaw = crypto.getRandomValues(new Uint8Array(32));
  const contentKey = await crypto.subtle.importKey("raw", contentRaw, "AES-GCM", false, ["encrypt"]);
  const nonce = crypto.getRandomValues(new Uint8Array(12));
  const ciphertext = await crypto.subtle.encrypt(
    { name: "AES-GCM", iv: nonce, additionalData: contentAad(sessionId) },
    contentKey,
    encoder.encode(text),
  );
  const ephemeral = await crypto.subtle.generateKey(CURVE, false, ["deriveBits"]);
  const ephemeralRaw = await rawPublicKey(ephemeral.publicKey);
  const sealed = [];
  for (const r of recipients) {
    const recipientRaw = unb64url(r.publicKey);
    const kek = await keyEncryptionKey(ephemeral.privateKey, recipientRaw, ephemeralRaw, recipientRaw);
    const wrapped = await crypto.subtle.encrypt(
      { name: "AES-GCM", iv: ZERO_IV, additionalData: recipientAad(r.email, r.keyId) },
      kek,
      contentRaw,
    );
    sealed.push({ email: r.email, keyId: r.keyId, wrappedKey: b64url(concat(ephemeralRaw, new Uint8Array(wrapped))) });
  }
  return {
    alg: ALG,
    senderKeyId,
    recipients: sealed,
    nonce: b64url(nonce),
    ciphertext: b64url(ciphertext),
  };
}

/**
 * The text of an envelope, for this device (`me`: {email, keyId, privateKey, publicRaw}).
 * Throws DecryptError when it cannot: not sealed for this device, another scheme, or damaged.
 */
export async function open(envelope, sessionId, me) {
  if (!envelope || envelope.alg !== ALG) {
    throw new DecryptError("scheme", `cannot decrypt (unknown scheme ${envelope && envelope.alg})`);
  }
  const mine = (envelope.recipients || []).find(
    (r) => String(r.email).toLowerCase() === me.email && r.keyId === me.keyId,
  );
  if (!mine || !mine.wrappedKey) {
    throw new DecryptError("no-key", "cannot decrypt (no key for this device)");
  }
  try {
    const blob = unb64url(mine.wrappedKey);
    const ephemeralRaw = blob.subarray(0, RAW_PUBLIC_BYTES);
    const kek = await keyEncryptionKey(me.privateKey, ephemeralRaw, ephemeralRaw, me.publicRaw);
    const contentRaw = await crypto.subtle.decrypt(
      { name: "AES-GCM", iv: ZERO_IV, additionalData: recipientAad(mine.email, mine.keyId) },
      kek,
      blob.subarray(RAW_PUBLIC_BYTES),
    );
    const contentKey = await crypto.subtle.importKey("raw", contentRaw, "AES-GCM", false, ["decrypt"]);
    const plain = await crypto.subtle.decrypt(
      { name: "AES-GCM", iv: unb64url(envelope.nonce || ""), additionalData: contentAad(sessionId) },
      contentKey,
      unb64url(envelope.ciphertext),
    );
    return decoder.decode(plain);
  } catch {
    throw new DecryptError("damaged", "cannot decrypt (damaged, or not sealed for this device's key)");
  }
}
