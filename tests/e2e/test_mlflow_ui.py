"""The MLflow UI's runs page, rendered in headless Chromium, shows two runs by their names, with
their dataset, source and model; the registered model's page shows both versions, the newest
with its alias and F1.

The first run is the baseline project's (`dvc repro`, logged to the sqlite store directly), the
second goes through a real `mlflow server` on a copy of that store (`dvc exp run -n ...`), so
registering through a server is exercised too. Needs Debian's chromium (`.ci/run` installs it).
"""

from __future__ import annotations

import html
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.servers import free_port, serving
from tests.helpers.project import run_cmd

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=2400,1400",
]


def page_text(chromium: str, url: str, profile: Path) -> str:
    proc = subprocess.run(
        [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--virtual-time-budget=30000", "--dump-dom", url],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0 and proc.stdout, f"chromium failed ({proc.returncode}): {proc.stderr[-3000:]}"
    text = re.sub(r"<script.*?</script>|<style.*?</style>", "", proc.stdout, flags=re.S)
    return html.unescape(re.sub(r"\s*(<[^>]+>\s*)+", " | ", text)).replace("\xa0", " ")  # "@\xa0candidate"


@pytest.fixture()
def server(project, tmp_path):
    repo = project
    port = free_port()
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    cmd = [
        "mlflow",
        "server",
        "--backend-store-uri",
        f"sqlite:///{repo / 'mlflow.db'}",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    with serving(cmd, f"http://127.0.0.1:{port}/health", tmp_path / "server.log", repo, env):
        yield repo, f"http://127.0.0.1:{port}"


def test_runs_page_shows_both_run_names_the_dataset_and_the_model(server, tmp_path):
    from mlflow.tracking import MlflowClient

    chromium = shutil.which("chromium")
    assert chromium, "install Debian's chromium package (apt-get install chromium) for this check"
    repo, url = server
    # a second run, through the server: an evaluate-only experiment (the model is reused, the
    # export registers what it now serves as version 2), its run named after the DVC experiment
    run_cmd(["dvc", "exp", "run", "-n", "nbest-5", "-S", "evaluate.n_best=5"], repo, env={"MLFLOW_TRACKING_URI": url})
    client = MlflowClient(url)
    experiment = client.get_experiment_by_name("squad-pipeline")
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    runs = client.search_runs([experiment.experiment_id])
    names = sorted(r.info.run_name for r in runs)
    assert names == ["nbest-5 · evaluate", "tiny_minilm · sample"]
    assert str(client.get_model_version_by_alias("squad-qa", "candidate").version) == "2"

    # MLflow 3.17 keeps the GenAI / Model training switch per browser (localStorage), GenAI by
    # default, whatever the experiment's tag: a fresh browser opening the experiment gets GenAI's
    # Overview; the README's link (?workflowType=machine_learning) opens the runs table.
    genai = page_text(chromium, f"{url}/#/experiments/{experiment.experiment_id}", tmp_path / "fresh-profile")
    assert " | Traces | Sessions | " in genai
    text = page_text(
        chromium, f"{url}/#/experiments/{experiment.experiment_id}?workflowType=machine_learning", tmp_path / "profile"
    )
    assert "Runs - Experiment" in text and " | Model registry | " in text and " | Sessions | " not in text
    (tmp_path / "runs-page.txt").write_text(text)
    columns = text[text.find("Run Name") :]
    for expected in ("Run Name", "Dataset", "Source", "Models", *names, "sample-train", "squad-qa"):
        assert expected in columns, f"{expected!r} not on the runs page: {columns[:1500]}"
    assert " | train | " not in columns  # no run is named after its stage

    # the registered model's page: both versions, the newest with the candidate alias and its F1 tag
    registry = page_text(chromium, f"{url}/#/models/squad-qa?workflowType=machine_learning", tmp_path / "profile")
    assert " | Version 2 | " in registry and " | Version 1 | " in registry, registry[:1500]
    newest = registry[registry.find(" | Version 2 | ") : registry.find(" | Version 1 | ")]
    f1 = client.get_model_version("squad-qa", "2").tags["f1"]
    assert "@ candidate" in newest and f"| f1 | : {f1} |" in newest, newest
