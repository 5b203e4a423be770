"""A run from submit to its Parquet files: `services` (the per-process context), `identity`
(run ids, create or resume, the driver lock), `pipeline` (the run state machine: ingest ->
dispatch -> finalize), `dispatch` and `collect` (the chunk state machine), `deadline_guard`
(at deadline - margin: cancel batches, release GPU work of alias lines, send what is left
synchronously), `quota` (vendors' enqueued-token caps), `cancel` (asking
for one, and how soon a driver acts on it), and `follow_ups` (what fires once a run is
finalized).

May import: output, intake, planning, backends, cache, state, storage, config and the core
modules.
"""
