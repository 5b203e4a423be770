"""batchd: cheap latency-tolerant LLM batch jobs."""

__version__ = "0.1.0"
