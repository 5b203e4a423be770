"""Bulk data: S3 access, blobs under a local directory or an s3:// prefix (chunk files, result
parts, run outputs), outcome parts (framed msgpack), and keyed SQLite look-ups.

May import: config and the core modules (`batchd.errors`, `batchd.outcome`, `batchd.requests`).
"""
