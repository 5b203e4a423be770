"""The effective settings, each with where its value came from (`batchd settings`)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import msgspec

from batchd.config.settings import ENV_LAYER, load_settings, settings_layers

_SECRET_KEY = re.compile(r"(api_?key|secret|password|token)$", re.I)
_URL_PASSWORD = re.compile(r"(://[^:/@]*:)[^@]+@")


class SettingRow(msgspec.Struct):
    key: str  # dotted: openai.max_retries, backends.vllm.model
    value: Any
    source: str  # "default", "file <path>", "env BATCHD_...", "flag"


def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, dict) and data:
        out: dict[str, Any] = {}
        for k, v in data.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: data}


def variable_of(key: str) -> str:
    """The BATCHD_* variable that sets a dotted key."""
    parts = key.split(".")
    if parts[:2] == ["backends", "vllm"]:
        parts = ["vllm", *parts[2:]]
    return "BATCHD_" + "_".join(parts).upper()


def mask(key: str, value: Any) -> Any:
    """Secrets never printed: key-like fields hidden, passwords cut out of URLs."""
    if isinstance(value, str):
        if value and _SECRET_KEY.search(key.rsplit(".", 1)[-1]):
            return "****"
        return _URL_PASSWORD.sub(r"\1****@", value)
    return value


def explain(
    cli: dict[str, Any] | None = None,
    environ: dict[str, str] | None = None,
    config_path: str | Path | None = None,
) -> list[SettingRow]:
    settings = load_settings(cli, environ, config_path)
    source: dict[str, str] = {}
    for where, layer in settings_layers(cli, environ, config_path):
        for key in _flatten(layer):
            if where == ENV_LAYER:
                source[key] = "env " + variable_of(key)
            elif where == "the command line":
                source[key] = "flag"
            else:
                source[key] = "file " + where
    effective = _flatten(msgspec.to_builtins(settings))
    rows = []
    for key, value in sorted(effective.items()):
        origin = source.get(key) or next(
            (s for k, s in source.items() if key.startswith(k + ".")), "default"
        )
        rows.append(SettingRow(key, mask(key, value), origin))
    return rows
