// crdtsync records in a stock Yjs document: reading and writing them with nothing but
// `yjs`, following the layout documented in crdtsync/registers.py and README.md
// ("Records"). A browser app can copy this file as is.
//
//   rec:<id>  Y.Map  head id -> {f, v, at} (a field write) | {d, at} (delete / restore)
//   heads     Y.Map  head id -> [record id, field] (field null for a delete / restore head)
//   writers   Y.Map  String(clientID) -> who writes under that client id
//
// A head id is the head entry's own Yjs id, `${clientID}.${clock}`.

import * as Y from 'yjs'

const PREFIX = 'rec:'

/** Name this client in `writers` (shown as the replica_id of its conflicting values). */
export const registerWriter = (ydoc, name) => {
  ydoc.getMap('writers').set(String(ydoc.clientID), name)
}

/** The greater of two heads: `at` first, then the head id as a string. */
const wins = (a, b) => a.at !== b.at ? a.at > b.at : a.key > b.key

/** Every head of a record, grouped by field (`null`: the deleted register), winner first. */
export const recordHeads = (ydoc, id) => {
  const groups = new Map()
  for (const [key, head] of ydoc.getMap(PREFIX + id)) {
    if (head === null || typeof head !== 'object') continue
    const at = typeof head.at === 'number' ? head.at : 0
    let field
    if (typeof head.f === 'string' && head.f !== '') field = head.f
    else if ((head.f === undefined || head.f === null) && typeof head.d === 'boolean') field = null
    else continue
    const entry = { key, at, value: field === null ? head.d : head.v }
    if (!groups.has(field)) groups.set(field, [])
    groups.get(field).push(entry)
  }
  for (const group of groups.values()) group.sort((a, b) => wins(a, b) ? -1 : 1)
  return groups
}

/**
 * A record as crdtsync reads it: {exists, deleted, fields, conflicts}. `fields` holds each
 * field's winning value; `conflicts` the fields with concurrent values (all of them).
 */
export const readRecord = (ydoc, id) => {
  const groups = recordHeads(ydoc, id)
  const fields = {}
  const conflicts = {}
  for (const [field, group] of groups) {
    if (field === null) continue
    fields[field] = group[0].value
    if (group.length > 1) conflicts[field] = group.map((head) => head.value)
  }
  const deleted = (groups.get(null) ?? []).some((head) => head.value === true)
  return { exists: groups.size > 0, deleted, fields, conflicts }
}

/** Write one head of `field` (null: the deleted register) that replaces every head of it. */
const writeHead = (ydoc, id, field, payload) => {
  const record = ydoc.getMap(PREFIX + id)
  const heads = ydoc.getMap('heads')
  for (const [key, head] of record) {
    const headField = head !== null && typeof head === 'object'
      ? (head.f === undefined ? null : head.f)
      : undefined // not a head
    if (headField === field) {
      record.delete(key)
      heads.delete(key)
    }
  }
  const key = `${ydoc.clientID}.${Y.getState(ydoc.store, ydoc.clientID)}`
  record.set(key, payload)
  heads.set(key, [id, field])
}

/** Set one field of record `id` (creating the record if needed), in one transaction. */
export const writeField = (ydoc, id, field, value) => {
  ydoc.transact(() => writeHead(ydoc, id, field, { f: field, v: value, at: Date.now() }))
}

/** Delete (deleted: true) or restore (false) record `id`. */
export const setDeleted = (ydoc, id, deleted) => {
  ydoc.transact(() => writeHead(ydoc, id, null, { d: deleted, at: Date.now() }))
}

/** The ids of every record that has a head. */
export const recordIds = (ydoc) =>
  [...new Set([...ydoc.getMap('heads').values()].map((entry) => entry[0]))].sort()
