"""Where each request runs and how it is grouped: `routing` (model or alias -> targets),
`estimates` (tokens, cost and GPU-seconds per target), `capacity` (GPU-seconds in the
windows before a deadline), `assignment` (fill the GPUs with the biggest savings),
`chunking` (chunk files within each backend's limits), `plan_totals` (what a plan adds up
to), `observations` (what earlier runs measured), `turnaround` (vendor batch turnaround
percentiles), `release` (where the deadline guard sends an alias's GPU lines) and `tokens`
(offline token counts).

May import: backends, cache, state, storage, config and the core modules.
"""
