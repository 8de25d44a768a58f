// The inspector's page: a list of assigned inspections, and a form for one of them.
// No framework: the page is redrawn from the records whenever something changes.
//
//   ?relay=ws://host:port/yjs   the relay's y-websocket endpoint (default: this host, port 8765)
//   ?inspector=NAME             who the office sees as the writer of this device's values

import { recordIds, readRecord } from './records.js'
import { Inspections, COLLECTION } from './sync.js'
import { Photos } from './photos.js'

const params = new URLSearchParams(location.search)
const relay = params.get('relay') ?? `ws://${location.hostname}:8765/yjs`
const inspector = params.get('inspector') ?? 'inspector'

const $ = (selector) => document.querySelector(selector)
const form = $('#inspection')
const EDITABLE = ['condition', 'notes'] // the fields the form edits (the photo has its own input)

let redraw = false
const changed = () => { // draw once per burst of changes
  if (!redraw) { redraw = true; queueMicrotask(() => { redraw = false; render() }) }
}
const inspections = new Inspections(relay, `${inspector} (browser)`, changed)
const photos = new Photos(COLLECTION, changed)
const uploadPhotos = () => photos.upload().catch((error) => console.warn('photo upload:', error))

// The app shell (this page, its script and style) is kept by a service worker, so the
// page opens with no network; the records come from IndexedDB.
if ('serviceWorker' in navigator) {
  navigator.serviceWorker.register('sw.js')
  navigator.serviceWorker.ready.then(() => {
    $('#shell').textContent = 'Saved for offline use: this page opens with no network.'
  })
}

/** The live records, {id, fields, conflicts}, by site. */
const records = () => recordIds(inspections.doc)
  .map((id) => ({ id, ...readRecord(inspections.doc, id) }))
  .filter((record) => record.exists && !record.deleted)
  .sort((a, b) => String(a.fields.site).localeCompare(String(b.fields.site)))

const badge = (element, text) => {
  element.textContent = text
  element.className = 'badge ' + (text === 'uploaded' ? 'uploaded' : text ? 'pending' : '')
}

function render () {
  const network = inspections.network
  $('#network').textContent = network
  $('#network').className = 'badge ' + network
  const all = records()
  const pending = inspections.pending
  $('#summary').textContent = `${all.length} inspections. ` + (pending
    ? `${pending} saved on this device, to upload${network === 'online' ? '' : ' when online'}.`
    : 'Everything is uploaded.')

  const id = decodeURIComponent(location.hash.slice(1))
  const open = all.find((record) => record.id === id)
  $('#list').hidden = open !== undefined
  form.hidden = open === undefined
  if (open) renderForm(open)
  else renderList(all)
}

function renderList (all) {
  $('#list').replaceChildren(...all.map((record) => {
    const item = document.createElement('li')
    item.dataset.id = record.id
    const link = document.createElement('a')
    link.href = '#' + encodeURIComponent(record.id)
    const site = document.createElement('div')
    site.className = 'site'
    site.textContent = `${record.fields.site ?? record.id} · ${record.fields.address ?? ''}`
    const details = document.createElement('div')
    details.className = 'muted'
    details.textContent = `${record.fields.status ?? ''} · due ${record.fields.due ?? '?'} `
    const state = document.createElement('span')
    badge(state, inspections.state(record.id))
    details.append(state)
    link.append(site, details)
    item.append(link)
    return item
  }))
}

function renderForm (record) {
  const { fields } = record
  form.dataset.id = record.id
  $('#title').textContent = `${fields.site ?? record.id} · ${fields.address ?? ''}`
  $('#task').textContent = fields.task ?? ''
  $('#status').textContent = fields.status ?? ''
  badge($('#state'), inspections.state(record.id))
  // A value someone else wrote replaces what the form shows, unless the inspector is
  // typing in that field (then their text stays until they save).
  for (const name of EDITABLE) {
    const input = form.elements[name]
    if (!input.dataset.dirty) input.value = fields[name] ?? ''
  }
  renderPhoto(fields.photo)
  $('#conflicts').replaceChildren(...Object.entries(record.conflicts).map(([field, values]) => {
    const note = document.createElement('p')
    note.className = 'conflict'
    const written = values.map((value) => JSON.stringify(value)).join(' and ')
    note.textContent = `${field}: ${written} were written at the same time on two devices. ` +
      `Showing ${JSON.stringify(fields[field])} until the office picks one.`
    return note
  }))
}

/** The photo: from this device if it is here, else from the relay (through the page's server). */
async function renderPhoto (ref) {
  const box = $('#photo')
  if (typeof ref !== 'string' || !ref.startsWith('sha256:')) {
    box.replaceChildren()
    delete box.dataset.shown
    return
  }
  const local = await photos.get(ref)
  const state = local && !local.uploaded ? 'photo saved on this device' : 'photo uploaded'
  if (box.dataset.shown === ref + state) return // already on screen
  box.dataset.shown = ref + state
  const img = document.createElement('img')
  img.alt = 'photo'
  img.src = local ? URL.createObjectURL(local.blob) : `/attachments/${ref.slice('sha256:'.length)}`
  img.onload = () => URL.revokeObjectURL(img.src)
  const caption = document.createElement('span')
  caption.className = 'muted'
  caption.textContent = state
  box.replaceChildren(img, caption)
}

// -- editing ------------------------------------------------------------------------------

for (const name of EDITABLE) {
  form.elements[name].addEventListener('input', (event) => { event.target.dataset.dirty = '1' })
}

/** Save the fields the inspector changed (and, for Submit, the status) as one write. */
form.addEventListener('submit', async (event) => {
  event.preventDefault()
  const id = form.dataset.id
  const current = readRecord(inspections.doc, id).fields
  const fields = {}
  for (const name of EDITABLE) {
    const input = form.elements[name]
    if (input.value !== (current[name] ?? '')) fields[name] = input.value
    delete input.dataset.dirty
  }
  if (event.submitter?.value === 'submit') {
    fields.status = 'submitted'
    fields.submitted_at = new Date().toISOString()
  }
  if (Object.keys(fields).length > 0) await inspections.write(id, fields)
  if (event.submitter?.value === 'submit') location.hash = ''
})

$('#photo-file').addEventListener('change', async (event) => {
  const file = event.target.files[0]
  if (!file) return
  const id = form.dataset.id
  await inspections.write(id, { photo: await photos.add(file) })
  event.target.value = ''
  if (inspections.network === 'online') uploadPhotos()
})

$('#back').addEventListener('click', (event) => { event.preventDefault(); location.hash = '' })
addEventListener('hashchange', () => {
  for (const name of EDITABLE) delete form.elements[name].dataset.dirty
  render()
})
await photos.open()
await inspections.open()
// Photos go up whenever the page is linked to the relay.
inspections.provider.on('sync', (synced) => { if (synced) uploadPhotos() })
render()
