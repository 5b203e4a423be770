"""Why a settings value is refused, in one line: the key, the value given and its valid range
(as declared with msgspec Meta on the field), and that every number is finite."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import msgspec

from batchd.errors import BatchdError

_INT_MAX = 2**63 - 1  # what state, caches and vendors can carry


def non_finite(root: type, value: Any, path: str = "") -> list[str]:
    """Every float that is NaN or infinite (and int beyond 64 bits), anywhere in the tree."""
    if isinstance(value, bool):
        return []
    if isinstance(value, float) and not math.isfinite(value):
        return [f"{path} must be a finite number{range_of(root, path, ' ')} (got {value})"]
    if isinstance(value, int) and abs(value) > _INT_MAX:
        return [f"{path} is out of range (got {value})"]
    if isinstance(value, msgspec.Struct):
        return [
            p
            for name in value.__struct_fields__
            for p in non_finite(root, getattr(value, name), f"{path}.{name}".lstrip("."))
        ]
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in non_finite(root, v, f"{path}.{k}")]
    return []


_MSGSPEC_RANGE = re.compile(r"Expected `(\w+)`,?(?: (.*?))? - at `\$\.?(.*)`$", re.S)


def describe(
    root: type,
    tables: tuple[str, ...],
    exc: msgspec.ValidationError,
    data: dict[str, Any],
    path: str | Path,
) -> BatchdError:
    """One line naming the key, the value given and its valid range."""
    text = str(exc)
    m = _MSGSPEC_RANGE.match(text)
    if m is None:
        return BatchdError(
            f"Invalid setting: {text}.",
            f"Fix it in {path}, the BATCHD_* environment, or the command line.",
        )
    kind, rule, where = m.group(1), (m.group(2) or "").strip(), m.group(3)
    key = where.replace("[...]", "").replace("[", ".").replace("]", "")
    given = _lookup(data, where)
    what = {"int": "an integer", "float": "a number", "bool": "true or false"}.get(kind, kind)
    rule = range_of(root, key) or ("" if rule.startswith("got") else rule)
    env = _env_name(key, tables)
    return BatchdError(
        f"Invalid setting {key}"
        + (f" = {given!r}" if given is not None else "")
        + f": must be {what}{' ' + rule if rule else ''}.",
        f"Fix it in {path}" + (f", {env}" if env else "") + " or on the command line.",
    )


def range_of(root: type, key: str, sep: str = "") -> str:
    """The valid range declared for a settings key, e.g. 'in 1..1000' or '> 0'."""
    info: Any = msgspec.inspect.type_info(root)
    for part in key.split("."):
        while isinstance(info, msgspec.inspect.UnionType):
            info = next(t for t in info.types if not isinstance(t, msgspec.inspect.NoneType))
        if isinstance(info, msgspec.inspect.DictType):
            info = info.value_type
        if isinstance(info, msgspec.inspect.StructType):
            info = next((f.type for f in info.fields if f.name == part), None)
        else:
            return ""
    while isinstance(info, msgspec.inspect.UnionType):
        info = next(t for t in info.types if not isinstance(t, msgspec.inspect.NoneType))
    low = [f"{op} {getattr(info, a)}" for a, op in (("ge", ">="), ("gt", ">")) if hasattr(info, a)]
    high = [f"{op} {getattr(info, a)}" for a, op in (("le", "<="), ("lt", "<")) if hasattr(info, a)]
    low = [x for x in low if not x.endswith(" None")]
    high = [x for x in high if not x.endswith(" None")]
    if getattr(info, "ge", None) is not None and getattr(info, "le", None) is not None:
        return f"{sep}in {info.ge}..{info.le}"
    return sep + " and ".join(low + high) if low or high else ""


def _lookup(data: Any, where: str) -> Any:
    for part in re.split(r"\.|\[\.\.\.\]", where):
        if not part:
            continue
        if not isinstance(data, dict):
            return None
        if part not in data and len(data) == 1:  # "[...]": the one entry of a table
            data = next(iter(data.values()))
        data = data.get(part) if isinstance(data, dict) else None
    return data


def _env_name(key: str, tables: tuple[str, ...]) -> str:
    parts = key.split(".")
    if parts[0] == "backends" and parts[1:2] == ["vllm"]:
        parts = parts[1:]
    if parts[0] in tables:
        return ""
    return "BATCHD_" + "_".join(parts).upper()


REDIS_SCHEMES = ("redis://", "rediss://", "unix://")
TARGET_KINDS = ("vllm", "openai", "anthropic", "gemini")


def alias_problems(s: Any) -> list[str]:
    """What is wrong with the [models.<alias>] and [providers.<name>] tables."""
    problems = []
    kinds = {*TARGET_KINDS, *s.providers}
    for alias, a in s.models.items():
        if not a.targets:
            problems.append(f"models.{alias}.targets is empty")
        for t in a.targets:
            kind, _, model = t.partition(":")
            if not model or kind not in kinds:
                problems.append(
                    f"models.{alias}: target {t!r} must be vllm:<name>, openai:<model>, "
                    f"anthropic:<model>, gemini:<model> or <provider>:<model> with "
                    "[providers.<provider>]"
                )
            elif kind == "vllm" and model not in s.backends.vllm.served_names():
                problems.append(
                    f"models.{alias}: target {t!r} needs [backends.vllm] serving {model!r}"
                )
    for name in s.providers:
        if name in TARGET_KINDS:
            problems.append(f"providers.{name}: {name!r} is built in; pick another name")
    return problems
