"""JSON values for a JSON schema, for the emulators' structured answers and tool arguments.

:func:`example` builds a deterministic value valid against the schema for the keywords
vendors' structured outputs support (type, enum, const, properties / required,
additionalProperties, items / prefixItems / minItems, anyOf / oneOf / allOf, local ``$ref`` to
``$defs`` / ``definitions``, string lengths, numeric bounds). :func:`violation` builds a
value that is not valid (the emulators' ``[[schema:invalid]]`` marker: a model that did not
follow the schema). Both never raise on a hostile schema: they fall back to simple values.
"""

from __future__ import annotations

from typing import Any

MAX_DEPTH = 12


def example(schema: Any, root: Any = None, depth: int = 0) -> Any:
    root = schema if root is None else root
    if depth > MAX_DEPTH or not isinstance(schema, dict):
        return None if schema is False else {}
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/"):
        target: Any = root
        for part in ref[2:].split("/"):
            target = target.get(part) if isinstance(target, dict) else None
        return example(target, root, depth + 1)
    if "const" in schema:
        return schema["const"]
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return schema["enum"][0]
    for key in ("anyOf", "oneOf"):
        if isinstance(schema.get(key), list) and schema[key]:
            return example(schema[key][0], root, depth + 1)
    if isinstance(schema.get("allOf"), list) and schema["allOf"]:
        merged: dict[str, Any] = {k: v for k, v in schema.items() if k != "allOf"}
        for part in schema["allOf"]:
            if isinstance(part, dict):
                for k, v in part.items():
                    if k == "properties" and isinstance(v, dict):
                        merged.setdefault("properties", {}).update(v)
                    elif k == "required" and isinstance(v, list):
                        merged["required"] = [*merged.get("required", []), *v]
                    else:
                        merged.setdefault(k, v)
        return example(merged, root, depth + 1)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), kind[0] if kind else None)
    if kind is None:
        kind = "object" if "properties" in schema else "string"
    if kind == "object":
        props = schema.get("properties") if isinstance(schema.get("properties"), dict) else {}
        return {name: example(sub, root, depth + 1) for name, sub in props.items()}
    if kind == "array":
        prefix = schema.get("prefixItems") if isinstance(schema.get("prefixItems"), list) else []
        items = [example(s, root, depth + 1) for s in prefix]
        low = schema.get("minItems") if isinstance(schema.get("minItems"), int) else 0
        while len(items) < min(max(low, 1 if not prefix else 0), 50):
            items.append(example(schema.get("items", {}), root, depth + 1))
        return items
    if kind == "string":
        low = schema.get("minLength") if isinstance(schema.get("minLength"), int) else 0
        high = schema.get("maxLength") if isinstance(schema.get("maxLength"), int) else None
        text = "example".ljust(min(max(low, 0), 1000), "x")
        return text[:high] if high is not None and high >= 0 else text
    if kind in ("integer", "number"):
        for key in ("minimum", "exclusiveMinimum"):
            bound = schema.get(key)
            if isinstance(bound, (int, float)) and not isinstance(bound, bool):
                value = bound + (1 if key == "exclusiveMinimum" else 0)
                return int(value) if kind == "integer" else value
        high = schema.get("maximum")
        if isinstance(high, (int, float)) and not isinstance(high, bool) and high < 1:
            return int(high) if kind == "integer" else high
        return 1
    if kind == "boolean":
        return True
    return None


def violation(schema: Any) -> Any:
    """A value the schema rejects (where it rejects anything)."""
    if not isinstance(schema, dict):
        return {"not": "what was asked"}
    kind = schema.get("type")
    if kind == "object" or "properties" in schema:
        return ["not", "an", "object"]
    if kind == "array":
        return {"not": "an array"}
    if kind in ("string", "integer", "number", "boolean"):
        return None if kind != "boolean" else "not a boolean"
    return {"not": "what was asked"}
