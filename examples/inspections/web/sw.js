// The service worker: keeps the app shell (the page, its script and style) so the page
// opens with no network. The records are not here: they live in IndexedDB (y-indexeddb).
//
// Strategy: answer from the cache at once, and refresh the cached copy from the network in
// the background (stale-while-revalidate), so an update of the page shows on the next open.

const CACHE = 'inspections-shell-v1'
const SHELL = ['./', 'index.html', 'style.css', 'dist/app.js']

self.addEventListener('install', (event) => {
  event.waitUntil(caches.open(CACHE).then((cache) => cache.addAll(SHELL)))
  self.skipWaiting()
})

self.addEventListener('activate', (event) => {
  event.waitUntil((async () => {
    for (const name of await caches.keys()) if (name !== CACHE) await caches.delete(name)
    await self.clients.claim() // control the page that registered us, without a reload
  })())
})

self.addEventListener('fetch', (event) => {
  const url = new URL(event.request.url)
  if (event.request.method !== 'GET' || url.origin !== location.origin ||
      url.pathname.startsWith('/attachments/')) return // the network's business
  event.respondWith((async () => {
    const cache = await caches.open(CACHE)
    const cached = await cache.match(event.request, { ignoreSearch: true }) // ?relay=... is the same page
    const fresh = fetch(event.request).then((response) => {
      if (response.ok) cache.put(event.request, response.clone())
      return response
    })
    if (cached) {
      event.waitUntil(fresh.catch(() => {})) // offline: the cached copy is all there is
      return cached
    }
    return fresh
  })())
})
