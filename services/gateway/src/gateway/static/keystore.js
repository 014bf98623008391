// What the browser keeps for end-to-end encryption, in IndexedDB (database "chat-e2ee"):
// - "devices": this browser's key pair per signed-in email, {email, keyId, privateKey,
//   publicKey, publicRaw, createdAt}; the private key is a non-extractable CryptoKey (stored
//   as the object itself: structured clone keeps it unexportable), so no script can read its
//   bytes, this page's included;
// - "pins": per (my email, peer email) the peer's keys last seen, {keyId: fingerprint}, so a
//   key that changed while this page was away is noticed when the chat opens.
// Nothing here is sent anywhere but the public key.

import { fingerprint, newDeviceKey, newKeyId, rawPublicKey } from "./e2ee.js";

const DB_NAME = "chat-e2ee";
const DB_VERSION = 1;

let opening = null;

function database() {
  if (!opening) {
    opening = new Promise((resolve, reject) => {
      const request = indexedDB.open(DB_NAME, DB_VERSION);
      request.onupgradeneeded = () => {
        const db = request.result;
        if (!db.objectStoreNames.contains("devices")) db.createObjectStore("devices", { keyPath: "email" });
        if (!db.objectStoreNames.contains("pins")) db.createObjectStore("pins", { keyPath: "id" });
      };
      request.onsuccess = () => resolve(request.result);
      request.onerror = () => reject(request.error);
      request.onblocked = () => reject(new Error("the key store is held by another tab"));
    });
    opening.catch(() => {
      opening = null;
    });
  }
  return opening;
}

async function run(store, mode, action) {
  const db = await database();
  return new Promise((resolve, reject) => {
    const tx = db.transaction(store, mode);
    const request = action(tx.objectStore(store));
    let result;
    request.onsuccess = () => {
      result = request.result;
    };
    tx.oncomplete = () => resolve(result);
    tx.onerror = () => reject(tx.error || request.error);
    tx.onabort = () => reject(tx.error || new Error("key store transaction aborted"));
  });
}

/**
 * This browser's device key for `email`, made (and kept) on first use:
 * {email, keyId, privateKey, publicKey, publicRaw (Uint8Array), fingerprint}.
 */
export async function deviceKey(email) {
  let device = await run("devices", "readonly", (s) => s.get(email));
  if (!device) {
    const pair = await newDeviceKey();
    const made = {
      email,
      keyId: newKeyId(),
      privateKey: pair.privateKey,
      publicKey: pair.publicKey,
      publicRaw: await rawPublicKey(pair.publicKey),
      createdAt: new Date().toISOString(),
    };
    // Two tabs signing in at once: the first key stored wins, the other tab reads it.
    await run("devices", "readwrite", (s) => s.add(made)).catch(() => {});
    device = await run("devices", "readonly", (s) => s.get(email));
  }
  const publicRaw = new Uint8Array(device.publicRaw);
  return { ...device, publicRaw, fingerprint: await fingerprint(publicRaw) };
}

const pinId = (me, peer) => `${me}\n${peer}`;

/** The keys of `peer` last seen by `me` ({keyId: fingerprint}), or null before the first time. */
export async function pinned(me, peer) {
  const entry = await run("pins", "readonly", (s) => s.get(pinId(me, peer)));
  return entry ? entry.keys : null;
}

export async function pin(me, peer, keys) {
  await run("pins", "readwrite", (s) => s.put({ id: pinId(me, peer), keys, at: new Date().toISOString() }));
}

/** Drops all that is kept for `email` (its account was deleted): its key pair and its pins. */
export async function forget(email) {
  await run("devices", "readwrite", (s) => s.delete(email));
  await run("pins", "readwrite", (s) => s.delete(IDBKeyRange.bound(`${email}\n`, `${email}\n\uffff`)));
}
