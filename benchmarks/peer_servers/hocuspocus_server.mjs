// Hocuspocus (@hocuspocus/server) for the crdtsync benchmark.
//
//   node hocuspocus_server.mjs [HOST] [PORT]
//
// No extension: documents live in memory only (nothing is stored), no authentication hook
// (every token is accepted), unloaded when their last connection closes (the default).
// Prints "hocuspocus listening on ws://HOST:PORT" as its first stdout line and exits on
// SIGTERM/SIGINT. Started by benchmarks/peers.py from benchmarks/.peers/node.
import { Server } from '@hocuspocus/server'

const host = process.argv[2] || '127.0.0.1'
const port = Number.parseInt(process.argv[3] || '0', 10)

const server = new Server({ address: host, port, quiet: true, stopOnSignals: false })
await server.listen()
console.log(`hocuspocus listening on ws://${host}:${server.address.port}`)
const stop = async () => {
  setTimeout(() => process.exit(0), 3000).unref()
  await server.destroy()
  process.exit(0)
}
process.on('SIGTERM', stop)
process.on('SIGINT', stop)
