"""What a run hands back: the Parquet schemas of results and costs, row assembly (one row per
input line, in input order), the cost summary and the OpenAI-format export.

May import: intake, planning, backends, cache, state, storage, config and the core modules.
"""
