"""Distributed mode: the pipeline steps as arq jobs. `coordinator` (the CPU workers' cron tick,
run steps, drop-folder scans and nightly specs), `gpu_jobs` (a vLLM chunk on a gpu worker's
engine) and `leases` (fenced leases in Redis, renewed from a thread). The arq
WorkerSettings in the top-level `workers/` package import these.

May import: triggers, run and everything below them.
"""
