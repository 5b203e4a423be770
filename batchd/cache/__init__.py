"""The result cache across runs: the Cache interface (`base`), with the SQLite (embedded) and
Redis (distributed) implementations side by side. Keys are tenant-scoped by construction;
only successful outcomes are stored.

May import: storage, config and the core modules.
"""
