"""The tokenize stage as a process: --num-proc changes speed only, never the bytes it writes (so it
is not a DVC param). In a process of its own: datasets forks its workers, and a fork from a test
process that already runs other libraries' threads (TensorFlow's, MLflow's) can hang."""

from __future__ import annotations

import sys

from tests.helpers.project import run_cmd, tree_digest


def test_tokenized_bytes_do_not_depend_on_num_proc(project):
    written = {}
    for num_proc in (1, 3):
        run_cmd([sys.executable, "-m", "pipeline.tokenize", "--num-proc", str(num_proc)], project)
        written[num_proc] = tree_digest(project / "data/tokenized")
    assert len(written[1]) >= 6
    assert written[1] == written[3]
