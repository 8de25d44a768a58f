// A stock Yjs client (yjs + y-websocket's WebsocketProvider over `ws`), driven by
// tests/test_yjs_interop.py through JSON lines.
//
// stdin:  one command per line, {"id": 1, "cmd": "insert", ...}
// stdout: one reply per command, {"id": 1, "ok": true, ...} or
//         {"id": 1, "ok": false, "error": "..."}; replies may come out of order
//         (a "wait_*" command does not hold up the commands after it).
// stderr: a log for humans.
// The process exits on the "exit" command or when stdin closes.
//
// Commands (timeouts in seconds, default 10):
//   connect       {url, room, state?}  start the provider (url: ws://host:port/yjs; one
//                                      document per process: later calls reconnect the
//                                      same one); `state`: the local awareness state
//   disconnect    {}                   provider.disconnect(); replies once the socket is closed
//   wait_synced   {timeout?}           until the provider has the server's sync step 2
//   insert        {text, index, value} Y.Text insert
//   delete        {text, index, length}
//   set           {map, key, value}    Y.Map set (value: any JSON)
//   remove        {map, key}
//   awareness     {state}              awareness.setLocalState(state) (null withdraws it)
//   writer        {name}               register this client in the records' `writers` map
//   record_set    {record, field, value}  set a record field as records.mjs does (the
//                                      layout's rule; `record` is the record id)
//   record_delete {record, deleted}    delete (true) or restore (false) a record
//   record_get    {record}             -> {record: readRecord(...), itemIds: {head id: the
//                                          Yjs id of its entry, "client.clock"}}
//   wait_record   {record, expect, timeout?}  until readRecord(...) has the values in `expect`
//                                          (any of exists, deleted, fields, conflicts)
//   get           {texts?, maps?}      -> {content: {texts, maps}, awareness, clientID,
//                                          connected, synced, connects, closes}
//   wait_content  {texts?, maps?, timeout?}  until the named texts/maps equal the given
//                                          values (text strings, map JSON); -> like get
//   wait_awareness {client?, state?, key?, present, timeout?}
//                                      until some remote client (or `client`) has a state
//                                      equal to `state` / having `key` (present: true),
//                                      or until none has (present: false); -> like get
//   exit          {}                   destroy the provider (its goodbye included) and exit
//
// Waiting is done on Yjs events (doc 'update', awareness 'change', provider 'sync'),
// never by sleeping.

import readline from 'node:readline'
import * as Y from 'yjs'
import { WebsocketProvider } from 'y-websocket'
import WebSocket from 'ws'
import { readRecord, registerWriter, setDeleted, writeField } from './records.mjs'

const doc = new Y.Doc()
/** @type {WebsocketProvider | null} */
let provider = null
let connects = 0
/** @type {Array<{code: number, reason: string}>} */
const closes = []

const log = (...args) => console.error(`[yclient ${doc.clientID}]`, ...args)

const reply = (message) => {
  process.stdout.write(JSON.stringify(message) + '\n')
}

/** JSON with sorted object keys: equal values give equal strings. */
const canonical = (value) => JSON.stringify(value, (_key, v) =>
  v && typeof v === 'object' && !Array.isArray(v)
    ? Object.fromEntries(Object.keys(v).sort().map((k) => [k, v[k]]))
    : v
)

const content = (texts = [], maps = []) => ({
  texts: Object.fromEntries(texts.map((name) => [name, doc.getText(name).toString()])),
  maps: Object.fromEntries(maps.map((name) => [name, doc.getMap(name).toJSON()]))
})

const awarenessStates = () => {
  if (provider === null) return {}
  return Object.fromEntries(provider.awareness.getStates())
}

const snapshot = (cmd) => ({
  content: content(cmd.texts, cmd.maps),
  awareness: awarenessStates(),
  clientID: doc.clientID,
  connected: provider !== null && provider.wsconnected,
  synced: provider !== null && provider.synced,
  connects,
  closes
})

/**
 * Resolve when `check()` is true, re-checking whenever `subscribe`'s callback runs;
 * reject after `timeout` seconds with `describe()` in the message.
 */
const until = (check, subscribe, timeout, describe) => new Promise((resolve, reject) => {
  if (check()) {
    resolve()
    return
  }
  let unsubscribe = () => {}
  const timer = setTimeout(() => {
    unsubscribe()
    reject(new Error(`timed out after ${timeout} s: ${describe()}`))
  }, timeout * 1000)
  unsubscribe = subscribe(() => {
    if (check()) {
      clearTimeout(timer)
      unsubscribe()
      resolve()
    }
  })
})

const onDocUpdate = (callback) => {
  doc.on('update', callback)
  return () => doc.off('update', callback)
}

const requireProvider = () => {
  if (provider === null) throw new Error('not connected yet: send "connect" first')
  return provider
}

const onAwarenessChange = (callback) => {
  const awareness = requireProvider().awareness
  awareness.on('change', callback)
  return () => awareness.off('change', callback)
}

/** Wait for a ws socket's 'close' event (at most `timeout` seconds). */
const closed = (ws, timeout = 5) => new Promise((resolve) => {
  if (ws === null || ws.readyState === WebSocket.CLOSED) {
    resolve()
    return
  }
  const timer = setTimeout(resolve, timeout * 1000)
  ws.once('close', () => {
    clearTimeout(timer)
    resolve()
  })
})

const commands = {
  async connect (cmd) {
    if (provider === null) {
      provider = new WebsocketProvider(cmd.url, cmd.room, doc, {
        WebSocketPolyfill: WebSocket,
        disableBc: true, // everything goes through the relay, nothing between processes
        connect: false
      })
      provider.on('status', ({ status }) => {
        log('status', status)
        if (status === 'connected') connects++
      })
      provider.on('connection-close', (event) => {
        if (event) closes.push({ code: event.code, reason: event.reason })
      })
    }
    if (cmd.state !== undefined) provider.awareness.setLocalState(cmd.state)
    provider.connect()
    return {}
  },

  async disconnect () {
    const p = requireProvider()
    const ws = p.ws
    p.disconnect()
    await closed(ws)
    return {}
  },

  async wait_synced (cmd) {
    const p = requireProvider()
    await until(
      () => p.synced,
      (callback) => {
        p.on('sync', callback)
        return () => p.off('sync', callback)
      },
      cmd.timeout ?? 10,
      () => `not synced (connected: ${p.wsconnected}, closes: ${canonical(closes)})`
    )
    return snapshot(cmd)
  },

  async insert (cmd) {
    doc.getText(cmd.text).insert(cmd.index, cmd.value)
    return {}
  },

  async delete (cmd) {
    doc.getText(cmd.text).delete(cmd.index, cmd.length)
    return {}
  },

  async set (cmd) {
    doc.getMap(cmd.map).set(cmd.key, cmd.value)
    return {}
  },

  async remove (cmd) {
    doc.getMap(cmd.map).delete(cmd.key)
    return {}
  },

  async writer (cmd) {
    registerWriter(doc, cmd.name)
    return {}
  },

  async record_set (cmd) {
    writeField(doc, cmd.record, cmd.field, cmd.value)
    return {}
  },

  async record_delete (cmd) {
    setDeleted(doc, cmd.record, cmd.deleted)
    return {}
  },

  async record_get (cmd) {
    const itemIds = {}
    for (const [key, item] of doc.getMap('rec:' + cmd.record)._map) {
      if (!item.deleted) itemIds[key] = `${item.id.client}.${item.id.clock}`
    }
    return { record: readRecord(doc, cmd.record), itemIds }
  },

  async wait_record (cmd) {
    const matches = () => {
      const record = readRecord(doc, cmd.record)
      return Object.entries(cmd.expect).every(([k, v]) => canonical(record[k]) === canonical(v))
    }
    await until(
      matches,
      onDocUpdate,
      cmd.timeout ?? 10,
      () => `record ${cmd.record} is ${canonical(readRecord(doc, cmd.record))}, ` +
        `waiting for ${canonical(cmd.expect)}`
    )
    return { record: readRecord(doc, cmd.record) }
  },

  async awareness (cmd) {
    requireProvider().awareness.setLocalState(cmd.state)
    return {}
  },

  async get (cmd) {
    return snapshot(cmd)
  },

  async wait_content (cmd) {
    const texts = cmd.texts ?? {}
    const maps = cmd.maps ?? {}
    const expected = canonical({ texts, maps })
    const current = () => content(Object.keys(texts), Object.keys(maps))
    await until(
      () => canonical(current()) === expected,
      onDocUpdate,
      cmd.timeout ?? 10,
      () => `content is ${canonical(current())}, waiting for ${expected}`
    )
    return snapshot({ texts: Object.keys(texts), maps: Object.keys(maps) })
  },

  async wait_awareness (cmd) {
    const p = requireProvider()
    const matches = (client, state) => {
      if (cmd.client !== undefined && cmd.client !== null) {
        if (client !== cmd.client) return false
      } else if (client === doc.clientID) {
        return false
      }
      if (cmd.state !== undefined && canonical(state) !== canonical(cmd.state)) return false
      if (cmd.key !== undefined && (state === null || typeof state !== 'object' ||
        !(cmd.key in state))) return false
      return true
    }
    const found = () => [...p.awareness.getStates()].some(([c, s]) => matches(c, s))
    const want = cmd.present !== false
    await until(
      () => found() === want,
      onAwarenessChange,
      cmd.timeout ?? 10,
      () => `awareness states are ${canonical(awarenessStates())}, waiting until ` +
        `${want ? 'one' : 'none'} matches ${canonical({ client: cmd.client, state: cmd.state, key: cmd.key })}`
    )
    return snapshot(cmd)
  },

  async exit () {
    await shutdown()
    return {}
  }
}

/** @type {Promise<void> | null} */
let shuttingDown = null

/** Destroy the provider (it sends this client's awareness removal), wait for the close. */
const shutdown = () => {
  if (shuttingDown === null) {
    shuttingDown = (async () => {
      if (provider !== null) {
        const ws = provider.ws
        provider.destroy()
        await closed(ws)
      }
    })()
  }
  return shuttingDown
}

const handle = async (line) => {
  let cmd
  try {
    cmd = JSON.parse(line)
  } catch (error) {
    reply({ id: null, ok: false, error: `not JSON: ${line}` })
    return
  }
  const command = Object.hasOwn(commands, cmd.cmd) ? commands[cmd.cmd] : undefined
  if (command === undefined) {
    reply({ id: cmd.id, ok: false, error: `unknown command ${canonical(cmd.cmd)}` })
    return
  }
  try {
    const result = await command(cmd)
    reply({ id: cmd.id, ok: true, ...result })
  } catch (error) {
    log(cmd.cmd, 'failed:', error)
    reply({ id: cmd.id, ok: false, error: String(error && error.message ? error.message : error) })
  }
  if (cmd.cmd === 'exit') process.exit(0)
}

const lines = readline.createInterface({ input: process.stdin, terminal: false })
lines.on('line', (line) => {
  if (line.trim() !== '') handle(line)
})
lines.on('close', () => {
  log('stdin closed; exiting')
  shutdown().then(() => process.exit(0))
})
log('ready')
