"""Input lines to routed, keyed, deduplicated requests: `lines` (stream raw lines in bounded
memory), `decode` (per line: decode, parse, route, key, encode; in worker processes),
`seen` (the in-run dedup set) and `ingest` (the whole file: duplicate ids, followers,
cache look-ups, chunking). Every line ends as exactly one record.

May import: planning, backends, cache, state, storage, config and the core modules.
"""
