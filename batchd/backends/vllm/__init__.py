"""Self-hosted vLLM: the warm engine and its feeder thread (`engine`), request -> prompt and
sampling parameters (`prompts`), chunks run with checkpoints (`runner`), the backend that
dispatch and collect see (`backend`), and off-peak `windows`. vLLM itself is imported
lazily, only when an engine starts.

May import: what `batchd.backends` may import, and `backends.base`.
"""
