"""Configuration: the one Settings object (batchd.toml < BATCHD_* env < CLI flags) and the
price book (dated, sourced data in `data/prices.toml`, overridable in settings).

May import: `batchd.errors` only.
"""
