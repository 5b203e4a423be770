"""The semantic cache: near-duplicate requests answered from the result cache, under a bound
on the false-hit rate. scope (what a match may differ in), entries (the store interface;
sqlite_entries, redis_entries), vector_index (usearch per scope), guard (rules, learned
thresholds), matcher (one ingest's lookups), answer_check (verification labels).

May import: the cache package (base, embedders), storage, config and the core modules.
"""
