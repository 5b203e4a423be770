"""Whether a routed answer agrees with the reference's, per metric (DESIGN §4 "Quality").

- exact: the same text;
- normalized: the same after folding case, whitespace and punctuation;
- json: the same JSON value (structured outputs), with the share of top-level fields
  that agree reported too;
- choice: the same label among the configured `choices` (classification);
- embedding: the cosine of the two answers' embeddings at least `threshold`.

A pair that cannot be judged (a side's answer has no label, is not JSON where the other
is...) is `unscored`, counted apart from the samples.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Sequence

import msgspec
import numpy as np
import numpy.typing as npt

from batchd.config.quality import QualitySettings

Embed = Callable[[list[str]], npt.NDArray[np.float32]]  # texts -> (n, d) L2-normalized
_WS = re.compile(r"\s+")


class Score(msgspec.Struct, gc=False, kw_only=True):
    agreed: bool | None  # None: unscored
    fields_agreed: int = 0  # json: top-level fields with the same value
    fields: int = 0  # json: top-level fields in either answer


UNSCORED = Score(agreed=None)


def normalize(text: str) -> str:
    """Case, whitespace and punctuation folded (Unicode-aware, NFKC first)."""
    folded = unicodedata.normalize("NFKC", text).casefold()
    kept = "".join(" " if unicodedata.category(c).startswith(("P", "S")) else c for c in folded)
    return _WS.sub(" ", kept).strip()


def exact(a: str, b: str) -> Score:
    return Score(agreed=a == b)


def normalized(a: str, b: str) -> Score:
    return Score(agreed=normalize(a) == normalize(b))


_NOT_JSON = object()


def _json(text: str) -> object:
    try:
        return msgspec.json.decode(text.strip().encode())
    except (msgspec.DecodeError, UnicodeEncodeError):
        return _NOT_JSON


def json_agreement(a: str, b: str) -> Score:
    """The same JSON value; for two objects, also how many top-level fields agree."""
    va, vb = _json(a), _json(b)
    if va is _NOT_JSON and vb is _NOT_JSON:
        return UNSCORED
    if va is _NOT_JSON or vb is _NOT_JSON:
        return Score(agreed=False)
    if isinstance(va, dict) and isinstance(vb, dict):
        names = set(va) | set(vb)
        same = sum(1 for k in names if k in va and k in vb and va[k] == vb[k])
        return Score(agreed=va == vb, fields_agreed=same, fields=len(names))
    return Score(agreed=va == vb)


def label_of(text: str, choices: Sequence[str]) -> str | None:
    """The one label the answer gives: the whole answer, else the only label among its words."""
    norm = normalize(text)
    labels = {normalize(c): c for c in choices}
    if norm in labels:
        return labels[norm]
    words = f" {norm} "
    found = [c for n, c in labels.items() if n and f" {n} " in words]
    return found[0] if len(found) == 1 else None


def choice(a: str, b: str, choices: Sequence[str]) -> Score:
    la, lb = label_of(a, choices), label_of(b, choices)
    if la is None and lb is None:
        return UNSCORED
    return Score(agreed=la is not None and la == lb)


def embedding(pairs: list[tuple[str, str]], embed: Embed, threshold: float) -> list[Score]:
    """Cosine of each pair's embeddings (L2-normalized: the dot product) >= threshold."""
    if not pairs:
        return []
    vecs = embed([t for pair in pairs for t in pair]).astype(np.float32)
    cos = np.einsum("ij,ij->i", vecs[0::2], vecs[1::2])
    return [Score(agreed=bool(c >= threshold)) for c in cos.tolist()]


def score_pairs(
    q: QualitySettings, pairs: list[tuple[str, str]], embed: Embed | None = None
) -> list[Score]:
    """(routed answer, reference answer) texts -> one Score each, by the alias's metric."""
    if q.metric == "embedding":
        if embed is None:
            raise ValueError("the embedding metric needs an embedding model")
        return embedding(pairs, embed, q.threshold)
    if q.metric == "exact":
        return [exact(a, b) for a, b in pairs]
    if q.metric == "json":
        return [json_agreement(a, b) for a, b in pairs]
    if q.metric == "choice":
        return [choice(a, b, q.choices) for a, b in pairs]
    return [normalized(a, b) for a, b in pairs]
