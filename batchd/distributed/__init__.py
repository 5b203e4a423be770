"""Distributed mode: the pipeline steps as arq jobs. `coordinator` (the CPU workers' cron tick,
run steps, drop-folder scans and nightly specs) and `gpu_jobs` (a vLLM chunk on a gpu
worker's engine). The arq WorkerSettings in the top-level `workers/` package import these.

May import: triggers, run and everything below them.
"""
