"""Team workflows: share through a DVC remote, share experiments through git, sweep with queued
experiments (two workers), compare in MLflow (client and a real server), and the faults a team
meets (missing/unreachable remote, MLflow server down).

Each test has its own copy of the session's baseline project (tests/conftest.py): the repo with
its results committed, and beside it the folder where its default DVC remote lands.
"""

from __future__ import annotations

import json
import os
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.helpers.servers import free_port, serving
from tests.helpers.project import executed_stages, git, run_cmd, stale_stages, tree_digest


@pytest.fixture()
def team(project):
    return project.parent, project


def test_default_remote_is_a_local_directory_beside_the_repo(team):
    root, repo = team
    out = run_cmd(["dvc", "remote", "list"], repo, env={"COLUMNS": "1000"}).stdout.split()
    assert out[0] == "localremote"
    assert Path(out[1]).resolve() == (root / "squad-pipeline-dvc-remote").resolve()


def test_teammate_pulls_data_models_and_run_cache_and_runs_nothing(team):
    root, repo = team
    run_cmd(["make", "push", "BIN=" + str(Path(sys.executable).parent), "STAMP="], repo)
    clone = root / "teammate"
    run_cmd(["git", "clone", "-q", str(repo), str(clone)], root)
    # the clone's relative remote URL would point beside *it*: use the team's remote
    run_cmd(
        ["dvc", "remote", "modify", "--local", "localremote", "url", str(root / "squad-pipeline-dvc-remote")], clone
    )
    run_cmd(["dvc", "pull", "--run-cache"], clone)
    proc = run_cmd(["dvc", "repro"], clone)
    assert executed_stages(proc) == set()
    for path in ("metrics/eval.json", "metrics/train.json", "predictions/predictions.json"):
        assert (clone / path).read_bytes() == (repo / path).read_bytes()
    assert tree_digest(clone / "models/export") == tree_digest(repo / "models/export")


def test_teammate_with_an_experiments_params_restores_it_from_the_remote_run_cache(team):
    """An experiment's params that no commit's dvc.lock records: `dvc repro --pull` in a
    teammate's clone finds every stage in the remote's run-cache and executes nothing."""
    root, repo = team
    run_cmd(["dvc", "exp", "run", "-n", "seed-7", "-S", "train.seed=7"], repo)
    params = (repo / "params.yaml").read_text()
    outputs = {
        p: (repo / p).read_bytes()
        for p in ("metrics/eval.json", "metrics/train.json", "predictions/predictions.json", "plots/train/steps.csv")
    }
    run_cmd(["dvc", "push", "--run-cache"], repo)

    clone = root / "teammate-exp"
    run_cmd(["git", "clone", "-q", str(repo), str(clone)], root)
    run_cmd(
        ["dvc", "remote", "modify", "--local", "localremote", "url", str(root / "squad-pipeline-dvc-remote")], clone
    )
    (clone / "params.yaml").write_text(params)
    assert "train.seed" in run_cmd(["dvc", "params", "diff"], clone).stdout  # not what dvc.lock records
    proc = run_cmd(["dvc", "repro", "--pull"], clone)
    assert executed_stages(proc) == set(), proc.stdout
    for path, content in outputs.items():
        assert (clone / path).read_bytes() == content, path
    assert stale_stages(clone) == set()


def test_make_push_refuses_an_uncommitted_dvc_lock_and_make_pull_works_on_a_clean_clone(team):
    root, repo = team
    make = ["make", "BIN=" + str(Path(sys.executable).parent), "STAMP="]
    with (repo / "dvc.lock").open("a") as fh:
        fh.write("\n")
    try:
        out = run_cmd([*make, "push"], repo, check=False)
        assert out.returncode != 0
        assert out.stderr.splitlines()[0].startswith("error: dvc.lock is not committed")
    finally:
        git(repo, "checkout", "--", "dvc.lock")
    clone = root / "clean-clone"
    run_cmd(["git", "clone", "-q", str(repo), str(clone)], root)
    git(clone, "checkout", "-q", "HEAD~1")  # the project as shipped: no dvc.lock yet
    run_cmd(
        ["dvc", "remote", "modify", "--local", "localremote", "url", str(root / "squad-pipeline-dvc-remote")], clone
    )
    out = run_cmd([*make, "pull"], clone)
    assert "no dvc.lock committed: fetched the run-cache" in out.stdout


def test_experiments_are_shared_through_a_git_remote(team):
    root, repo = team
    bare = root / "origin.git"
    run_cmd(["git", "init", "-q", "--bare", str(bare)], root)
    git(repo, "remote", "add", "origin", str(bare))
    git(repo, "push", "-q", "origin", "HEAD:refs/heads/main")
    # an evaluate-only experiment (the intervals' seed: only evaluate runs)
    run_cmd(["dvc", "exp", "run", "-n", "seed-5", "-S", "evaluate.bootstrap_seed=5"], repo)
    run_cmd(["dvc", "exp", "push", "origin", "seed-5"], repo)
    clone = root / "exp-clone"
    run_cmd(["git", "clone", "-q", "-b", "main", str(bare), str(clone)], root)
    run_cmd(["dvc", "exp", "pull", "origin", "seed-5"], clone)
    assert "seed-5" in run_cmd(["dvc", "exp", "list", "--name-only"], clone).stdout


def test_queued_sweep_with_two_workers_and_mlflow_comparison(team):
    """A queued sweep over two learning rates at another n_best, run by two queue workers in
    temporary copies: the baseline's rate reuses the trained model (evaluate and export run),
    the other trains. `dvc exp show` has both, and each one's MLflow run in the repo's store
    holds the same scores."""
    root, repo = team
    # 2e-4 is not the baseline's rate (3e-4), which the evaluate-only experiment keeps
    run_cmd(["dvc", "exp", "run", "--queue", "-S", "evaluate.n_best=5", "-S", "train.learning_rate=2e-4,3e-4"], repo)
    run_cmd(["dvc", "queue", "start", "-j", "2"], repo, capture=False)
    try:
        deadline = time.time() + 900
        while time.time() < deadline:
            status = run_cmd(["dvc", "queue", "status"], repo).stdout
            if "Queued" not in status and "Running" not in status:
                break
            time.sleep(5)
    finally:
        run_cmd(["dvc", "queue", "stop"], repo, check=False, capture=False)  # let the idle workers go
    assert "Failed" not in status and status.count("Success") == 2, status
    shown = json.loads(run_cmd(["dvc", "exp", "show", "--json"], repo).stdout)
    results = {}
    for baseline in shown:
        for exp in baseline.get("experiments") or []:
            for rev in exp["revs"]:
                data = rev.get("data") or {}
                params = data.get("params", {}).get("params.yaml", {}).get("data", {})
                metrics = data.get("metrics", {}).get("metrics/eval.json", {}).get("data", {})
                key = (params.get("train", {}).get("learning_rate"), params.get("evaluate", {}).get("n_best"))
                if "f1" in metrics:
                    results[key] = metrics
    assert set(results) == {(3e-4, 5), (2e-4, 5)}, shown

    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{repo / 'mlflow.db'}")
    experiment_id = client.get_experiment_by_name("squad-pipeline").experiment_id
    sweep_runs = client.search_runs([experiment_id], filter_string="tags.dvc_exp_name != ''")
    by_key = {
        (float(r.data.params["train.learning_rate"]), int(r.data.params["evaluate.n_best"])): r for r in sweep_runs
    }
    assert set(by_key) == set(results)
    for key, run_ in by_key.items():
        assert run_.data.metrics["f1"] == pytest.approx(results[key]["f1"])
        assert run_.data.metrics["exact_match"] == pytest.approx(results[key]["exact_match"])
        assert run_.data.tags["dvc_exp_name"]
        # the evaluate-only experiment reused the baseline's training; the other one trained
        assert run_.data.tags.get("training_reused") == ("true" if key[0] == 3e-4 else None), key

    # the same runs through a real MLflow server's REST API
    port = free_port()
    cmd = [
        str(Path(sys.executable).parent / "mlflow"),
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
    with serving(cmd, f"http://127.0.0.1:{port}/health", root / "mlflow-server.log", root, dict(os.environ)):
        body = json.dumps({"experiment_ids": [experiment_id], "max_results": 100}).encode()
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/api/2.0/mlflow/runs/search",
            data=body,
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            runs = json.loads(response.read())["runs"]
        served = {r["info"]["run_id"] for r in runs}
        assert {r.info.run_id for r in by_key.values()} <= served


def test_missing_and_unreachable_remotes_give_clear_messages(team):
    _, repo = team
    out = run_cmd(["dvc", "push", "-r", "no-such-remote"], repo, check=False)
    assert out.returncode != 0 and "no-such-remote" in out.stderr
    run_cmd(["dvc", "remote", "add", "--local", "unreachable", "http://127.0.0.1:9/dvc"], repo)
    out = run_cmd(["dvc", "push", "-r", "unreachable"], repo, check=False, timeout=300)
    assert out.returncode != 0 and "failed to push" in out.stderr.lower()


def test_mlflow_server_down_stops_training_before_it_starts(team):
    _, repo = team
    before = tree_digest(repo / "models/trained")
    out = run_cmd(
        [sys.executable, "-m", "pipeline.train"],
        repo,
        check=False,
        env={"MLFLOW_TRACKING_URI": f"http://127.0.0.1:{free_port()}"},
    )
    assert out.returncode == 1
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("error: MLflow tracking server MLFLOW_TRACKING_URI=http://127.0.0.1:")
    assert "nothing was run" in last and "unset MLFLOW_TRACKING_URI" in last
    assert tree_digest(repo / "models/trained") == before


def test_dvc_plots_render_the_loss_curve_and_an_em_f1_comparison(team):
    _, repo = team
    out = run_cmd(["dvc", "plots", "show", "--json"], repo)
    plots = json.loads(out.stdout)["data"]
    assert {"plots/train/steps.csv", "plots/train/epochs.csv", "plots/eval/scores.json"} <= set(plots)
    run_cmd(["dvc", "plots", "diff", "HEAD", "--out", "dvc_plots"], repo)
    html = (repo / "dvc_plots/index.html").read_text()
    assert "Training loss per step" in html and "Exact match and F1" in html
    assert "workspace" in html and "HEAD" in html  # both revisions are drawn
