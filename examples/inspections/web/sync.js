// The inspections collection on this device, and its link to the relay.
//
// - The Yjs document lives in IndexedDB (y-indexeddb): the page opens and shows the
//   assignments with no network, and every edit is kept there before it is sent.
// - y-websocket syncs it with the relay's /yjs/inspections, the document the office's
//   `replica.records("inspections")` reads. Edits follow the records layout (records.js),
//   so the office sees them as ordinary record changes.
// - Each record this device edited carries a mark: "saved on this device" once IndexedDB
//   has committed the edit, "uploaded" once the relay has it (see `probe` below for what
//   that means exactly). The marks live in IndexedDB too, so a reopened page still shows
//   what is waiting for the network.

import * as Y from 'yjs'
import { IndexeddbPersistence } from 'y-indexeddb'
import { WebsocketProvider } from 'y-websocket'
import * as encoding from 'lib0/encoding'
import * as decoding from 'lib0/decoding'
import * as syncProtocol from 'y-protocols/sync'
import { registerWriter, writeField } from './records.js'

export const COLLECTION = 'inspections'
const MESSAGE_SYNC = 0 // y-protocols: the message type of sync step 1, step 2 and updates

export class Inspections {
  /**
   * @param {string} relayUrl the relay's y-websocket endpoint, e.g. ws://127.0.0.1:8765/yjs
   * @param {string} writer who this device writes as (the `writers` name the office shows)
   * @param {() => void} onChange called after anything changes: records, marks, network
   */
  constructor (relayUrl, writer, onChange) {
    this.doc = new Y.Doc()
    this.relayUrl = relayUrl
    this.writer = writer
    this.onChange = onChange
    this.local = new IndexeddbPersistence(COLLECTION, this.doc)
    this.provider = null
    /** record id -> {n, saved, uploaded}: n orders the edits of this device. */
    this.marks = {}
    this.registered = false
    this.probes = [] // probes sent and not yet answered: the highest mark n each covers
    this.doc.on('update', () => this.onChange())
  }

  /** Load the copy on this device, then connect to the relay (unless the browser is offline). */
  async open () {
    await this.local.whenSynced
    // Marks read back from IndexedDB were committed with their edits: saved, by definition.
    this.marks = JSON.parse((await this.local.get('marks')) ?? '{}')
    for (const mark of Object.values(this.marks)) mark.saved = true
    this.provider = new WebsocketProvider(this.relayUrl, COLLECTION, this.doc, {
      connect: navigator.onLine,
      disableBc: true // one tab, one link: keeps "uploaded" about this page's own connection
    })
    this.provider.on('status', () => { this.probes = []; this.onChange() })
    this.provider.on('sync', (synced) => { if (synced) this.probe(); this.onChange() })
    this.watchAnswers()
    // The browser knows first when the network goes: stop (and resume) the link at once
    // instead of waiting for the websocket to time out.
    addEventListener('offline', () => this.provider.disconnect())
    addEventListener('online', () => this.provider.connect())
  }

  /** "online" when linked to the relay and caught up with it, else "offline". */
  get network () {
    return this.provider?.wsconnected && this.provider.synced ? 'online' : 'offline'
  }

  /** What the page shows for a record: '', 'saving', 'saved on this device' or 'uploaded'. */
  state (id) {
    const mark = this.marks[id]
    if (mark === undefined) return ''
    return mark.uploaded ? 'uploaded' : mark.saved ? 'saved on this device' : 'saving'
  }

  /** How many records wait for the relay. */
  get pending () {
    return Object.values(this.marks).filter((mark) => !mark.uploaded).length
  }

  /**
   * Write `fields` ({field: value}) of record `id`, each by the records rule, in one
   * transaction; IndexedDB keeps it, and the relay gets it now or on the next connect.
   */
  async write (id, fields) {
    this.doc.transact(() => {
      if (!this.registered) { // a new Y.Doc (each page load) writes under a new client id
        registerWriter(this.doc, this.writer)
        this.registered = true
      }
      for (const [field, value] of Object.entries(fields)) writeField(this.doc, id, field, value)
    })
    const n = Math.max(0, ...Object.values(this.marks).map((mark) => mark.n)) + 1
    this.marks[id] = { n, saved: false, uploaded: false }
    this.onChange()
    this.probe() // sent after the edit itself, which y-websocket sent as the transaction ended
    await this.saveMarks()
    if (this.marks[id].n === n) this.marks[id].saved = true
    this.onChange()
  }

  /**
   * Store the marks in the same IndexedDB database. y-indexeddb wrote the edit itself
   * (in its "updates" store) as the transaction ended; IndexedDB runs read-write
   * transactions over the same stores in the order they were created, so when this one
   * completes, the edit is committed as well: "saved on this device".
   */
  saveMarks () {
    return new Promise((resolve, reject) => {
      const tx = this.local.db.transaction(['updates', 'custom'], 'readwrite')
      tx.objectStore('custom').put(JSON.stringify(this.marks), 'marks')
      tx.oncomplete = resolve
      tx.onerror = tx.onabort = () => reject(tx.error)
    })
  }

  /**
   * "Uploaded", honestly. The y-websocket protocol has no acknowledgement: the relay never
   * says "stored" to a Yjs client. What a page can know: the relay handles one
   * connection's messages in order and answers every sync step 1 with a sync step 2. So
   * once our edits went out (as updates, or in the sync handshake after a reconnect), we
   * send a step 1 of our own, a probe; its answer proves that the relay has applied every
   * edit sent before it to the shared document, which everyone connected has received and
   * which the relay stores with its next commit (a fraction of a second later). If the
   * relay crashed in between, the edit is still in this browser's IndexedDB, and the next
   * handshake sends it again: nothing is lost, but nothing promises more than that either.
   *
   * Probes go only once the handshake is over (`synced`), so every step 2 that arrives
   * after that answers one of our probes, oldest first.
   */
  probe () {
    const provider = this.provider
    if (!provider?.wsconnected || !provider.synced || this.pending === 0) return
    const encoder = encoding.createEncoder()
    encoding.writeVarUint(encoder, MESSAGE_SYNC)
    syncProtocol.writeSyncStep1(encoder, this.doc)
    provider.ws.send(encoding.toUint8Array(encoder))
    this.probes.push(Math.max(...Object.values(this.marks).map((mark) => mark.n)))
  }

  /** Wrap the provider's sync message handler (its documented extension point) to see
   * the answers to our probes. */
  watchAnswers () {
    const handle = this.provider.messageHandlers[MESSAGE_SYNC]
    this.provider.messageHandlers[MESSAGE_SYNC] = (encoder, decoder, provider, ...rest) => {
      const step = decoding.peekVarUint(decoder)
      const answered = step === syncProtocol.messageYjsSyncStep2 && provider.synced
        ? this.probes.shift()
        : undefined
      handle(encoder, decoder, provider, ...rest)
      if (answered !== undefined) this.uploaded(answered)
    }
  }

  /** The relay has every edit of this device up to mark `n`. */
  uploaded (n) {
    let changed = false
    for (const mark of Object.values(this.marks)) {
      if (mark.n <= n && !mark.uploaded) changed = mark.uploaded = true
    }
    if (!changed) return
    this.onChange()
    this.saveMarks().catch((error) => console.error('could not store the marks', error))
  }
}
