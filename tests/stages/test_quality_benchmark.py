"""The quality benchmark's tuning slice: questions written back to SQuAD JSON read back unchanged."""

from __future__ import annotations

import sys

from tests.helpers.project import PROJECT_ROOT, SAMPLE_DIR
from pipeline.qa.squad import read_squad_json

sys.path.insert(0, str(PROJECT_ROOT / "benchmarks"))

from quality import write_squad  # noqa: E402


def test_tuning_slice_round_trips_through_squad_json(tmp_path):
    records = read_squad_json(SAMPLE_DIR / "train.json.gz")[100:160]
    path = tmp_path / "tuning.json"
    write_squad(records, path)
    assert read_squad_json(path) == records

def test_tuning_slices_lie_beyond_the_8000_training_questions():
    import quality

    start, stop = quality.TUNING_QUESTIONS
    first_start, first_stop = quality.FIRST_TUNING_QUESTIONS
    assert start >= 8000 and stop - start == 3000
    assert start == first_start < first_stop <= stop  # the first runs' slice opens it (scored from its predictions)
