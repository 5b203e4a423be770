"""Runs that start themselves: the S3 drop folder (`drop_folder`) and nightly job specs
(`nightly`). Importing this package registers the drop folder's follow-up with
`run.follow_ups`.

May import: run and everything below it.
"""

from batchd.triggers import drop_folder as _drop_folder  # noqa: F401  (registers its follow-up)
