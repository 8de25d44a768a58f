// The y-websocket reference server (@y/websocket-server) for the crdtsync benchmark.
//
//   node y_websocket_server.mjs [HOST] [PORT]
//
// Serves one document per connection, named by the request path, with the package's own
// setupWSConnection (memory only: no YPERSISTENCE, documents are never written anywhere).
// Prints "y-websocket-server listening on ws://HOST:PORT" as its first stdout line and exits
// on SIGTERM/SIGINT. Started by benchmarks/peers.py from benchmarks/.peers/node.
import http from 'node:http'
import { WebSocketServer } from 'ws'
import { setupWSConnection, docs } from '@y/websocket-server/utils'

const host = process.argv[2] || '127.0.0.1'
const port = Number.parseInt(process.argv[3] || '0', 10)

const server = http.createServer((_request, response) => {
  response.writeHead(200, { 'Content-Type': 'text/plain' })
  response.end(JSON.stringify({ docs: docs.size }))
})
const wss = new WebSocketServer({ noServer: true, perMessageDeflate: false })
wss.on('connection', setupWSConnection)
server.on('upgrade', (request, socket, head) => {
  wss.handleUpgrade(request, socket, head, ws => wss.emit('connection', ws, request))
})
server.listen(port, host, () => {
  const address = server.address()
  console.log(`y-websocket-server listening on ws://${address.address}:${address.port}`)
})
const stop = () => {
  for (const client of wss.clients) client.terminate()
  server.close(() => process.exit(0))
  setTimeout(() => process.exit(0), 2000).unref()
}
process.on('SIGTERM', stop)
process.on('SIGINT', stop)
