// Hocuspocus (@hocuspocus/server) with @hocuspocus/extension-redis, for the crdtsync
// benchmark's scale-out comparison (benchmarks/redis): several of these processes on one
// Redis serve the same documents, as several crdtsync relays on one Redis do.
//
//   node hocuspocus_redis_server.mjs HOST PORT REDIS_HOST REDIS_PORT
//
// Documents live in each process's memory (no persistence extension: nothing is stored),
// updates and awareness travel between processes through Redis pub/sub (the extension's
// defaults), no authentication hook. Prints "hocuspocus listening on ws://HOST:PORT" as its
// first stdout line and exits on SIGTERM/SIGINT. Started from benchmarks/.peers/node.
import { Server } from '@hocuspocus/server'
import { Redis } from '@hocuspocus/extension-redis'

const host = process.argv[2] || '127.0.0.1'
const port = Number.parseInt(process.argv[3] || '0', 10)
const redisHost = process.argv[4] || '127.0.0.1'
const redisPort = Number.parseInt(process.argv[5] || '6379', 10)

const server = new Server({
  address: host,
  port,
  quiet: true,
  stopOnSignals: false,
  extensions: [new Redis({ host: redisHost, port: redisPort })],
})
await server.listen()
console.log(`hocuspocus listening on ws://${host}:${server.address.port}`)
const stop = async () => {
  setTimeout(() => process.exit(0), 3000).unref()
  await server.destroy()
  process.exit(0)
}
process.on('SIGTERM', stop)
process.on('SIGINT', stop)
