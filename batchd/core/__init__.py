"""Core helpers below `batchd.requests`: the field checks every input format shares
(`fields`: the reason a value is refused, max_tokens, deadlines, tenant and tags) and the
per-endpoint body checks and cache-key material (`endpoints`: embeddings, completions,
Responses).

May import: nothing of batchd but the other core modules (errors, outcome); never
`batchd.requests`, which imports this package.
"""
