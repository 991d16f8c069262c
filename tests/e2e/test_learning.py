"""Training learns: a short real training of the packaged MiniLM on the shipped sample (the train
and evaluate stages through `dvc repro`) lowers the loss and beats the untrained model's F1 by a
clear margin (the figures measured for this config are in docs/testing.md).

A learning rate of 0, labels pointing at the wrong tokens or a head that is never trained
would each fail here. The suite's one test of what the real model learns: the others train the
tiny checkpoint.
"""

from __future__ import annotations

import csv
import json
import sys

from tests.helpers.project import FLOAT32_TRAINING, SAMPLE_DIR, make_repo, run_cmd
from tests.helpers.saved_model import save_packaged_model

LEARNING_CONF = {
    "data/sample.yaml": {"max_train_samples": 600, "max_eval_samples": 100},
    "config.yaml": {"tokenize": {"max_length": 192, "stride": 64}},
    "train/cpu.yaml": {"learning_rate": 3.0e-4, "epochs": 1, "batch_size": 8, "log_every_steps": 5, **FLOAT32_TRAINING},
}
MARGIN_F1 = 15.0


def test_short_training_lowers_the_loss_and_beats_the_untrained_model(tmp_path):
    repo = make_repo(tmp_path, LEARNING_CONF)
    run_cmd(["dvc", "repro", "evaluate"], repo)
    trained = json.loads((repo / "metrics/eval.json").read_text())

    with (repo / "plots/train/steps.csv").open() as fh:
        losses = [float(row["loss"]) for row in csv.DictReader(fh)]
    assert len(losses) >= 8
    first, last = sum(losses[:2]) / 2, sum(losses[-2:]) / 2
    assert last < 0.8 * first, losses

    untrained_dir = save_packaged_model(tmp_path / "untrained")
    run_cmd(
        [
            sys.executable,
            "-m",
            "pipeline.evaluate_model",
            "--model",
            str(untrained_dir),
            "--data",
            str(SAMPLE_DIR / "validation.json.gz"),
            "--max-samples",
            "100",
            "--max-length",
            "192",
            "--stride",
            "64",
            "--out",
            str(tmp_path / "untrained.json"),
        ],
        repo,
    )
    untrained = json.loads((tmp_path / "untrained.json").read_text())
    assert untrained["examples"] == trained["examples"] == 100
    assert trained["f1"] >= untrained["f1"] + MARGIN_F1, (trained, untrained)
    assert trained["exact_match"] > untrained["exact_match"]
