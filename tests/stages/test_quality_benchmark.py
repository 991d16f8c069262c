"""The benchmarks' tuning slices: questions written back to SQuAD JSON read back unchanged, and
slices that never overlap the training questions."""

from __future__ import annotations

import sys

from pipeline.qa.squad import read_squad_json, write_squad_json
from tests.helpers.project import PROJECT_ROOT, SAMPLE_DIR

sys.path.insert(0, str(PROJECT_ROOT / "benchmarks"))

import quality  # noqa: E402
import quickstart  # noqa: E402


def test_tuning_slice_round_trips_through_squad_json(tmp_path):
    import gzip

    records = read_squad_json(SAMPLE_DIR / "train.json.gz")[100:160]
    for name in ("tuning.json", "tuning.json.gz"):  # .gz: compressed, as its name says
        path = tmp_path / name
        write_squad_json(records, path)
        assert read_squad_json(path) == records
    assert gzip.open(tmp_path / "tuning.json.gz").read(1) == b"{"


def test_tuning_slices_lie_beyond_the_8000_training_questions():
    start, stop = quality.TUNING_QUESTIONS
    first_start, first_stop = quality.FIRST_TUNING_QUESTIONS
    assert start >= 8000 and stop - start == 3000
    assert start == first_start < first_stop <= stop  # the first runs' slice opens it (scored from its predictions)


def test_the_quick_start_is_tuned_on_sample_train_questions_it_does_not_train_on():
    from tests.helpers.project import composed_config

    trained_on = composed_config().data.max_train_samples
    start, stop = quickstart.HELD_OUT
    assert trained_on == start and stop == len(read_squad_json(SAMPLE_DIR / "train.json.gz"))
