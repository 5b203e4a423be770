"""Run and chunk state: the records and the Store interface (`base`), with the SQLite
(embedded) and Redis (distributed) implementations side by side, and `fencing` (a store
seen through one lease). Every chunk change is a compare-and-set, so a step that runs twice
changes nothing the second time.

May import: the core modules, and storage.private (files created 0600).
"""
