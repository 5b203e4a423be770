"""The quality guard after a run: agreement of shadow samples and probes with the alias's
reference (metrics.py; the embedding metric embeds with cache.embedders), and the run's
quality.parquet with the running figures kept in the observations store (measure.py).

The plan side (which lines are sampled, which targets are gated) is planning.shadows and
planning.gate.

May import: core, config, storage, state, cache, planning, output.
"""
