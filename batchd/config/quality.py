"""[models.<alias>.quality]: the quality guard's settings for one alias (shadow samples
against the alias's reference model, the agreement metric, the gate's threshold)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import msgspec

Meta = msgspec.Meta
METRICS = ("exact", "normalized", "json", "choice", "embedding", "judge")
# metric = "judge": the question put to the judge model; the judge must answer YES or NO
# (quality/verdicts.py says exactly what is accepted)
DEFAULT_JUDGE_PROMPT = (
    "You compare two answers to the same request.\n\n"
    "Request:\n{request}\n\n"
    "Reference answer:\n{reference}\n\n"
    "Answer to judge:\n{answer}\n\n"
    "Is the answer to judge as good as the reference answer (as correct, as complete, as "
    "useful for the request)? Reply with exactly one word: YES or NO."
)
JUDGE_FIELDS = ("request", "reference", "answer")
EMBEDDING_SCHEMES = ("local", "vllm")  # sentence-transformers | a vLLM pooling model
# [models.<alias>].escalate_on: what sends a line's answer on to the alias's next target
ESCALATE_ON = ("length", "refusal", "schema_invalid", "failed")


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
    embedding: str = ""  # of metric = "embedding": "local:<model dir>" | "vllm:<model dir>"
    judge: str = ""  # metric = "judge": the model asked (any model batchd can send to)
    judge_prompt: str = DEFAULT_JUDGE_PROMPT  # with {request}, {reference} and {answer}


def quality_problems(alias: str, q: QualitySettings) -> list[str]:
    """What is wrong with one alias's [quality] table, as lines for the settings error."""
    where = f"models.{alias}.quality"
    problems = []
    if q.metric not in METRICS:
        problems.append(f"{where}.metric must be one of {', '.join(METRICS)} (got {q.metric!r})")
    if q.metric == "choice" and not q.choices:
        problems.append(f'{where}: metric = "choice" needs choices = ["label", ...]')
    if q.metric == "judge":
        problems += _judge_problems(where, q)
    if q.metric == "embedding":
        scheme, _, path = q.embedding.partition(":")
        if scheme not in EMBEDDING_SCHEMES or not path:
            problems.append(
                f'{where}: metric = "embedding" needs embedding = "local:<model dir>" '
                '(a sentence-transformers model on this machine) or "vllm:<model dir>" '
                "(a model vLLM runs as a pooling model)"
            )
        elif not (Path(path) / "config.json").is_file():  # checked before anything is bought
            problems.append(
                f"{where}.embedding: {path} holds no model (no config.json); give the "
                "directory of a sentence-transformers (local:) or vLLM pooling (vllm:) model"
            )
    return problems


def escalate_problems(alias: str, escalate_on: list[str]) -> list[str]:
    """What is wrong with one alias's escalate_on list."""
    bad = [v for v in escalate_on if v not in ESCALATE_ON]
    if not bad:
        return []
    return [
        f"models.{alias}.escalate_on: {', '.join(map(repr, bad))} is not one of "
        f"{', '.join(ESCALATE_ON)}"
    ]


def _judge_problems(where: str, q: QualitySettings) -> list[str]:
    if not q.judge:
        return [f'{where}: metric = "judge" needs judge = "<model>" (the model asked)']
    try:
        q.judge_prompt.format(**dict.fromkeys(JUDGE_FIELDS, ""))
    except (KeyError, IndexError, ValueError) as exc:
        return [
            f"{where}.judge_prompt: only {{request}}, {{reference}} and {{answer}} may appear "
            f"in braces (double other braces: {{{{ }}}}); got {exc!r}"
        ]
    missing = [f for f in JUDGE_FIELDS if "{" + f + "}" not in q.judge_prompt]
    if missing:
        return [f"{where}.judge_prompt must name {', '.join('{' + f + '}' for f in missing)}"]
    return []
