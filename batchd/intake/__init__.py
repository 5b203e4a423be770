"""Input lines to routed, keyed, deduplicated requests: `lines` (stream raw lines in bounded
memory), `screen` (raw-line checks the decoder does not make), `decode` (per line, behind
a fault barrier: decode, parse, route, key, encode), `parse_pool` (decode in worker
processes that may raise or die), `seen` (the in-run dedup set) and `ingest` (the whole
file: duplicate ids, followers, cache look-ups, chunking). Every line ends as exactly one
record.

May import: planning, backends, cache, state, storage, config and the core modules.
"""
