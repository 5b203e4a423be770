"""[models.<alias>.quality]: the quality guard's settings for one alias (shadow samples
against the alias's reference model, the agreement metric, the gate's threshold)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import msgspec

Meta = msgspec.Meta
METRICS = ("exact", "normalized", "json", "choice", "embedding")
EMBEDDING_SCHEMES = ("local",)


class QualitySettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Shadow samples of an alias's lines, also sent to its reference model, and the gate."""

    # share of the lines placed on a target other than the reference also sent to it
    shadow_fraction: Annotated[float, Meta(ge=0, le=1)] = 0.05
    shadow_min: Annotated[int, Meta(ge=0, le=1_000_000)] = 20  # per target and run, if it has them
    metric: str = "normalized"  # exact | normalized | json | choice | embedding
    # a target whose 95% interval lies wholly below this is gated (no more lines but probes)
    min_agreement: Annotated[float, Meta(ge=0, le=1)] = 0.9
    choices: list[str] = msgspec.field(default_factory=list)  # labels of metric = "choice"
    threshold: Annotated[float, Meta(ge=-1, le=1)] = 0.85  # cosine of metric = "embedding"
    embedding: str = ""  # embedding target of metric = "embedding": "local:<model dir>"


def quality_problems(alias: str, q: QualitySettings) -> list[str]:
    """What is wrong with one alias's [quality] table, as lines for the settings error."""
    where = f"models.{alias}.quality"
    problems = []
    if q.metric not in METRICS:
        problems.append(f"{where}.metric must be one of {', '.join(METRICS)} (got {q.metric!r})")
    if q.metric == "choice" and not q.choices:
        problems.append(f'{where}: metric = "choice" needs choices = ["label", ...]')
    if q.metric == "embedding":
        scheme, _, path = q.embedding.partition(":")
        if scheme not in EMBEDDING_SCHEMES or not path:
            problems.append(
                f'{where}: metric = "embedding" needs embedding = "local:<model dir>" '
                "(a sentence-transformers model on this machine)"
            )
        elif not (Path(path) / "config.json").is_file():  # checked before anything is bought
            problems.append(
                f"{where}.embedding: {path} holds no model (no config.json); give the "
                "directory of a sentence-transformers model"
            )
    return problems
