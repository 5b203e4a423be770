"""The building blocks of settings sections: a strict section base and the numbers' ranges.

Valid ranges are declared on each field; a value outside its range is refused at load with
one line naming the key and the range. Floats must also be finite (no NaN, no infinity).
"""

from __future__ import annotations

from typing import Annotated

import msgspec

Meta = msgspec.Meta
PositiveS = Annotated[float, Meta(gt=0)]  # a duration in seconds (or hours) above zero
NonNegative = Annotated[float, Meta(ge=0)]
Fraction = Annotated[float, Meta(ge=0, le=1)]
Count = Annotated[int, Meta(ge=1)]
NonNegInt = Annotated[int, Meta(ge=0)]
Retries = Annotated[int, Meta(ge=0, le=100)]  # 0 = no retries
Attempts = Annotated[int, Meta(ge=1, le=100)]
TokenCount = Annotated[int, Meta(ge=1, le=10_000_000)]
ByteCount = Annotated[int, Meta(ge=0, le=2**62)]
MemoryShare = Annotated[float, Meta(gt=0, le=1)]


class Section(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """A settings section: unknown keys are errors, every field is given by name."""
