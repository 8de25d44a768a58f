// Photos. A record holds only a reference, "sha256:<hex of the bytes>" (the form crdtsync's
// attachments use, so the office gets the bytes with `await replica.attachments.get(ref)`).
// The bytes stay in this browser's IndexedDB and are uploaded to the relay's resumable
// /attachments/ endpoint when the network is there (through the page's own server, which
// passes /attachments/ on to the relay: same origin, no CORS).

import * as idb from 'lib0/indexeddb'

const STORE = 'photos' // hex -> {blob, uploaded}
const CHUNK = 1 << 20 // the relay takes at most 1 MiB per request

export class Photos {
  /**
   * @param {string} doc the document the photos belong to (the relay checks access by it)
   * @param {() => void} onChange called when a photo is added or uploaded
   */
  constructor (doc, onChange) {
    this.doc = doc
    this.onChange = onChange
    this.db = null
    this.uploading = null
  }

  async open () {
    this.db = await idb.openDB(`${this.doc}-photos`, (db) => idb.createStores(db, [[STORE]]))
  }

  /** Keep `file` on this device; return its reference for a record field. */
  async add (file) {
    const digest = new Uint8Array(await crypto.subtle.digest('SHA-256', await file.arrayBuffer()))
    const hex = [...digest].map((byte) => byte.toString(16).padStart(2, '0')).join('')
    const [store] = idb.transact(this.db, [STORE])
    await idb.put(store, { blob: file, uploaded: false }, hex)
    this.onChange()
    return 'sha256:' + hex
  }

  /** The photo of `ref` on this device ({blob, uploaded}), or undefined. */
  async get (ref) {
    const [store] = idb.transact(this.db, [STORE], 'readonly')
    return idb.get(store, ref.slice('sha256:'.length))
  }

  /** Upload every photo the relay does not have yet; one run at a time. */
  upload () {
    this.uploading ??= this.uploadAll().finally(() => { this.uploading = null })
    return this.uploading
  }

  async uploadAll () {
    const [store] = idb.transact(this.db, [STORE], 'readonly')
    for (const { k: hex, v: photo } of await idb.getAllKeysValues(store)) {
      if (photo.uploaded) continue
      await this.send(hex, photo.blob)
      const [done] = idb.transact(this.db, [STORE])
      await idb.put(done, { ...photo, uploaded: true }, hex)
      this.onChange()
    }
  }

  /** POST the bytes from where the relay stands (it says so), one chunk at a time. */
  async send (hex, blob) {
    const url = (query) => `/attachments/${hex}?doc=${encodeURIComponent(this.doc)}&${query}`
    let { received, complete } = await answer(await fetch(url('status=1')))
    while (!complete) {
      const chunk = blob.slice(received, received + CHUNK)
      const response = await fetch(url(`offset=${received}&size=${blob.size}`), {
        method: 'POST',
        headers: { 'content-type': 'application/octet-stream' },
        body: chunk
      });
      ({ received, complete } = await answer(response))
    }
  }
}

/** The relay's JSON answer; 409 (another offset) also says where it stands. */
const answer = async (response) => {
  if (response.ok || response.status === 409) return response.json()
  throw new Error(`upload refused: ${response.status} ${await response.text()}`)
}
