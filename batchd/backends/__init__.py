"""Backends: one protocol (base.BatchBackend), one module per vendor or engine."""
