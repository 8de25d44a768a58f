"""How the Redis backend lays out a relay store: keys, the feed's messages, and the
Lua scripts that change them atomically. No I/O.

Keys (``P`` is the store's prefix, ``crdtsync`` by default; ``T`` is the
document's hash tag, its id with ``%``, ``{`` and ``}`` percent-escaped)::

    P:store            HASH   version, next (the last log id assigned, all documents)
    P:docs             ZSET   every document id (score 0: sorted by code point)
    P:{T}:log          STREAM the document's log; entry id "<log id>-0",
                              fields u (update), c (CRC-32), o (origin: the writing relay)
    P:{T}:doc          HASH   snap, crc (snapshot and its CRC-32), upto, last (the last
                              log id of this document, never below upto), at (ms of the
                              last write, Redis clock)
    P:{T}:claims       HASH   client id -> owner (authorship)

and one sharded pub/sub channel per document, ``P:{T}:feed``: each append
publishes ``b"<prev> <id> <origin> " + update`` there, ``prev`` being the
document's previous log id, so that a follower that saw ``prev`` knows it
missed nothing, and otherwise reads the stream after what it saw.

Every key of one document carries the document's hash tag, so on Redis Cluster
they live in one slot (and its feed is a sharded channel of that slot). The two
store-wide keys (``P:store``, ``P:docs``) are what ties documents together: the
id counter that orders appends across documents, and the index of documents.
"""

from __future__ import annotations

from typing import Final

from crdtsync.ids import DocId

__all__ = [
    "APPEND",
    "COMPACT",
    "LAYOUT_VERSION",
    "READ",
    "Keys",
    "check_prefix",
    "hash_tag",
    "parse_feed",
]

LAYOUT_VERSION: Final = 1
"""``version`` in ``P:store``: the layout this code reads and writes."""

_PREFIX_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.:-")


def check_prefix(prefix: str) -> str:
    """``prefix`` if usable as a key prefix (letters, digits, ``_.:-``), else ValueError."""
    if not prefix or len(prefix) > 64 or not set(prefix) <= _PREFIX_CHARS:
        raise ValueError(
            f"Redis key prefix {prefix!r}: use 1 to 64 letters, digits or the characters _.:-"
        )
    return prefix


def hash_tag(doc_id: DocId) -> str:
    """The document's hash tag: its id with ``%``, ``{`` and ``}`` percent-escaped (a
    ``}`` would end the tag early), between braces."""
    escaped = doc_id.replace("%", "%25").replace("{", "%7B").replace("}", "%7D")
    return "{" + escaped + "}"


class Keys:
    """The key names of one store (``prefix``)."""

    __slots__ = ("docs", "prefix", "store")

    def __init__(self, prefix: str) -> None:
        self.prefix = check_prefix(prefix)
        self.store = f"{prefix}:store"
        self.docs = f"{prefix}:docs"

    def of(self, doc_id: DocId) -> tuple[str, str, str]:
        """``(log, doc, claims)`` keys of ``doc_id``."""
        base = f"{self.prefix}:{hash_tag(doc_id)}"
        return f"{base}:log", f"{base}:doc", f"{base}:claims"

    def feed(self, doc_id: DocId) -> bytes:
        """The document's sharded pub/sub channel."""
        return f"{self.prefix}:{hash_tag(doc_id)}:feed".encode()


def parse_feed(message: bytes) -> tuple[int, int, bytes, bytes]:
    """``(prev, id, origin, update)`` of a feed message; ValueError if malformed."""
    prev, entry_id, origin, update = message.split(b" ", 3)
    return int(prev), int(entry_id), origin, update


# Scripts start with a shebang so that Redis checks them before running: a
# script that writes is refused whole, before its first command, when Redis is
# over maxmemory (all or nothing); a read-only one runs anyway.

APPEND: Final = """#!lua
-- Append a batch: KEYS = store, docs, then log, doc, claims of each document.
-- ARGV = origin, #documents, #updates, #claims, then per document its id and feed
-- channel, per update its document number, CRC-32 and bytes, per claim its
-- document number, client id and owner. Returns the first log id assigned.
local origin = ARGV[1]
local ndocs, nupdates, nclaims = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local last = redis.call('HINCRBY', KEYS[1], 'next', nupdates)
local id = last - nupdates
local now = redis.call('TIME')
local at = string.format('%d', now[1] * 1000 + math.floor(now[2] / 1000))
local prev = {}
for i = 1, ndocs do
  local p = redis.call('HGET', KEYS[3 * i + 1], 'last')
  if not p then
    redis.call('ZADD', KEYS[2], 'NX', 0, ARGV[3 + 2 * i])
    p = '0'
  end
  prev[i] = p
end
local a = 5 + 2 * ndocs
for _ = 1, nupdates do
  local d = tonumber(ARGV[a])
  id = id + 1
  local sid = string.format('%d', id)
  redis.call('XADD', KEYS[3 * d], sid .. '-0', 'u', ARGV[a + 2], 'c', ARGV[a + 1], 'o', origin)
  local message = prev[d] .. ' ' .. sid .. ' ' .. origin .. ' ' .. ARGV[a + 2]
  redis.call('SPUBLISH', ARGV[4 + 2 * d], message)
  prev[d] = sid
  a = a + 3
end
for i = 1, ndocs do
  redis.call('HSET', KEYS[3 * i + 1], 'last', prev[i], 'at', at)
end
for _ = 1, nclaims do
  redis.call('HSETNX', KEYS[3 * tonumber(ARGV[a]) + 2], ARGV[a + 1], ARGV[a + 2])
  a = a + 3
end
return last - nupdates + 1
"""

COMPACT: Final = """#!lua
-- Store a snapshot covering the log up to ARGV[4] and trim those entries, unless a
-- snapshot covering more is stored already (another relay compacted first) or
-- that id was never assigned. KEYS = store, docs, log, doc.
-- ARGV = doc id, snapshot, CRC-32, upto. Returns {1} or {0, current upto, last id}.
local upto = tonumber(ARGV[4])
local assigned = tonumber(redis.call('HGET', KEYS[1], 'next') or '0')
local meta = redis.call('HMGET', KEYS[4], 'upto', 'last')
local current = tonumber(meta[1] or '0')
if upto > assigned or upto < current then
  return {0, current, assigned}
end
local last = math.max(tonumber(meta[2] or '0'), upto)
redis.call('HSET', KEYS[4], 'snap', ARGV[2], 'crc', ARGV[3], 'upto', ARGV[4],
  'last', string.format('%d', last))
redis.call('XTRIM', KEYS[3], 'MINID', string.format('%d', upto + 1))
redis.call('ZADD', KEYS[2], 'NX', 0, ARGV[1])
return {1}
"""

READ: Final = """#!lua flags=no-writes
-- A document's state in one consistent read. KEYS = log, doc, claims.
-- ARGV = after (log id: entries after it; 0 for all), claims wanted (1/0), snapshot
-- wanted (1: always; 0: only if the snapshot covers entries after `after`).
-- Returns {upto, snapshot or nil, crc or nil, last, entries, claims, at}.
local meta = redis.call('HMGET', KEYS[2], 'upto', 'crc', 'last', 'at')
local upto = tonumber(meta[1] or '0')
local after = tonumber(ARGV[1])
local snap = false
if ARGV[3] == '1' or upto > after then
  snap = redis.call('HGET', KEYS[2], 'snap') or false
end
local from = '-'
if after > 0 then from = '(' .. ARGV[1] .. '-0' end
local claims = {}
if ARGV[2] == '1' then claims = redis.call('HGETALL', KEYS[3]) end
return {meta[1] or '0', snap, meta[2] or false, meta[3] or '0',
  redis.call('XRANGE', KEYS[1], from, '+'), claims, meta[4] or '0'}
"""
