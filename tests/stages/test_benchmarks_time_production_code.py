"""Benchmarks time the code the pipeline runs (provenance by construction).

A benchmark that times pipeline code declares it at module level: TIMED_PRODUCTION_CODE maps
each section to (the function that runs it, the production functions it times). Read from the
source with ast (tests/helpers/call_graph.py says how calls are resolved), for every module in
benchmarks/:

(a) some stage's `main` (pipeline/{download,tokenize,train,evaluate,export}.py) reaches every
    declared function through the project's modules. The served model counts: the export stage
    creates the MLflow PythonModel it logs, and MLflow calls its predict;
(b) the section's function, with the benchmark helpers it calls, calls every declared function
    (in a subprocess too: `python -m pipeline.X` calls pipeline.X's main; loading the MLflow
    model with mlflow.pyfunc.load_model and calling predict, or `mlflow models serve`, calls
    the predict of the model class the benchmark builds with the export's code);
(c) every pipeline function called between clock readings is declared for each section whose
    code runs that timing; a module without a declaration times no pipeline code at all.
"""

from __future__ import annotations

import ast
import sys
import textwrap

import pytest
import yaml

from pipeline.runtime.paths import DVC_FILE, PROJECT_ROOT, dvc_stages
from tests.helpers.call_graph import PYFUNC_PREDICT, Benchmark, Project, timed_regions

STAGES = tuple(dvc_stages())  # dvc.yaml and open/dvc.yaml name the stages
STAGE_MAINS = tuple(f"pipeline.{stage}.main" for stage in STAGES)
# What `make repro` (`dvc repro`) runs: dvc.yaml's stages
REPRO_STAGE_MAINS = tuple(f"pipeline.{stage}.main" for stage in yaml.safe_load(DVC_FILE.read_text())["stages"])
BENCHMARK_MODULES = sorted(p.stem for p in (PROJECT_ROOT / "benchmarks").glob("*.py"))
# Benchmark modules that time no pipeline code, and why; (c) checks that they do not.
NO_PRODUCTION_TIMING = {
    "course_recipe": "times the course recipe's training, the baseline (its model comes from load_qa_model, untimed)",
    "machine": "describes the CPU; times nothing",
    "fresh_clone": "times `make repro` on fresh clones of two revisions: the clones' own code, which this "
    "analysis cannot follow (the stage code it runs is quickstart's section, timed there)",
}
# Declared functions no stage reaches yet: (benchmark, section) -> names. Exact: a new gap fails,
# and so does closing one until it is removed here.
KNOWN_GAPS = {
    # Peak RSS and time of `python -m pipeline.evaluate_model` (the command), not of the evaluate
    # stage, which reads pre-tokenized features and also writes its files and MLflow records.
    ("speed", "evaluate_memory"): {"pipeline.evaluate_model.main"},
}

PROJECT = Project.from_files(PROJECT_ROOT, flat_dirs=("benchmarks",))


def benchmark(project: Project, module: str) -> Benchmark:
    return Benchmark(project, module, [m for m in project.trees if not m.startswith("pipeline")])


def declared_sections() -> list[tuple[str, str]]:
    return [
        (module, section) for module in BENCHMARK_MODULES for section in (benchmark(PROJECT, module).declared() or {})
    ]


# --- the three rules, as functions returning what breaks them (tested below on made-up code) ---


def unreached(project: Project, bench: Benchmark, section: str, roots=STAGE_MAINS) -> list[str]:
    """(a): the section's declared names that do not exist or that no root reaches."""
    reached = project.reach(roots)
    problems = []
    for name in bench.declared()[section][1]:
        resolved = project.resolve_dotted(name)
        if resolved is None:
            problems.append(f"{name}: no such function in the project")
        elif resolved not in reached:
            module = project.defs[resolved].module
            nearby = sorted(
                r.removeprefix(module + ".")
                for r in reached
                if project.defs[r].module == module and not r.endswith("<module>")
            )
            problems.append(
                f"{name}: no stage's main calls it (static calls from {', '.join(roots)}); "
                f"what the stages run in {module}: {nearby}"
            )
    return problems


def uncalled(project: Project, bench: Benchmark, section: str) -> list[str]:
    """(b): the section's declared names its function (with its helpers) does not call."""
    function, names = bench.declared()[section]
    if f"{bench.module}.{function}" not in project.defs:
        return [f"{function}: no such function in {bench.module}"]
    calls = bench.section_references(function)
    return [
        f"{name}: {function} does not call it (it calls {sorted(calls)})"
        for name in names
        if (project.resolve_dotted(name) or name) not in calls
    ]


def undeclared(project: Project, bench: Benchmark) -> list[str]:
    """(c): pipeline code called between clock readings that the sections running it do not declare."""
    declared = bench.declared() or {}
    sections = {section: bench.closure([f"{bench.module}.{function}"]) for section, (function, _) in declared.items()}
    problems = []
    for timed in bench.functions_with_timing():
        refs = bench.timed_references(timed)
        if not refs:
            continue
        owners = [s for s, code in sections.items() if timed in code]
        if not owners:
            problems.append(f"{timed} times {sorted(refs)}, but no section of TIMED_PRODUCTION_CODE runs {timed}")
        for section in owners:
            names = {project.resolve_dotted(n) or n for n in declared[section][1]}
            if refs - names:
                problems.append(
                    f"{timed} times {sorted(refs - names)}, which section {section!r} does not declare "
                    f"(it declares {sorted(declared[section][1])})"
                )
    return problems


# --- the benchmarks --------------------------------------------------------------------------


def test_every_benchmark_declares_what_it_times_or_is_known_to_time_no_pipeline_code():
    undeclared_modules = [m for m in BENCHMARK_MODULES if benchmark(PROJECT, m).declared() is None]
    assert sorted(undeclared_modules) == sorted(NO_PRODUCTION_TIMING), (
        "a benchmark module times pipeline code: declare TIMED_PRODUCTION_CODE in it (or, if it times none, "
        "add it to NO_PRODUCTION_TIMING with the reason)"
    )
    declaring = set(BENCHMARK_MODULES) - set(undeclared_modules)
    assert {"speed", "serving", "quality", "quickstart", "profile_train"} <= declaring


@pytest.mark.parametrize("module,section", declared_sections())
def test_a_stage_runs_every_function_a_benchmark_times(module, section):
    problems = unreached(PROJECT, benchmark(PROJECT, module), section)
    gap = KNOWN_GAPS.get((module, section), set())
    new = [p for p in problems if p.split(":")[0] not in gap]
    assert not new, f"benchmarks/{module}.py section {section!r} times code the pipeline does not run:\n  " + (
        "\n  ".join(new)
    )
    closed = gap - {p.split(":")[0] for p in problems}
    assert not closed, (
        f"benchmarks/{module}.py section {section!r}: remove the closed gap {sorted(closed)} from KNOWN_GAPS"
    )


@pytest.mark.parametrize("module,section", declared_sections())
def test_each_section_calls_what_it_declares(module, section):
    problems = uncalled(PROJECT, benchmark(PROJECT, module), section)
    assert not problems, f"benchmarks/{module}.py section {section!r}:\n  " + "\n  ".join(problems)


@pytest.mark.parametrize("module", BENCHMARK_MODULES)
def test_every_pipeline_function_called_while_timing_is_declared(module):
    problems = undeclared(PROJECT, benchmark(PROJECT, module))
    assert not problems, f"benchmarks/{module}.py:\n  " + "\n  ".join(problems)


def test_speed_declares_every_section_it_can_run():
    tree = ast.parse((PROJECT_ROOT / "benchmarks/speed.py").read_text())
    sections = next(
        ast.literal_eval(n.value)
        for n in tree.body
        if isinstance(n, ast.Assign) and getattr(n.targets[0], "id", None) == "SECTIONS"
    )
    assert set(benchmark(PROJECT, "speed").declared()) == set(sections)


def test_the_analysis_sees_what_the_benchmarks_time():
    """Not blind: the timed calls found in the real benchmarks include the ones we know are there."""
    speed = benchmark(PROJECT, "speed")
    assert speed.timed_references("speed.bench_postprocessing") == {
        "pipeline.qa.postprocess.postprocess_predictions",
        "pipeline.qa.postprocess.ContextOffsets.from_dataset",
    }
    assert speed.timed_references("speed.train_ours") == {"pipeline.qa.training.make_dataset"}
    assert speed.timed_references("speed.bench_evaluate_rss") == {"pipeline.evaluate_model.main"}
    assert "speed.train_ours" in speed.closure(["speed.bench_training"])  # helpers count as the section's code
    serving = benchmark(PROJECT, "serving")
    assert serving.timed_references("serving.bench_pyfunc") == {"pipeline.mlflow_model.QAModel.predict"}
    assert benchmark(PROJECT, "quickstart").timed_references("quickstart.run_config") == set(REPRO_STAGE_MAINS)
    reached = PROJECT.reach(STAGE_MAINS)
    assert "pipeline.qa.postprocess.best_spans" not in reached  # the function the benchmark used to time
    assert PROJECT.path(reached, "pipeline.qa.postprocess.postprocess_predictions") == [
        "pipeline.evaluate.main",
        "pipeline.evaluate.evaluate",
        "pipeline.evaluate.predict",
        "pipeline.qa.predictions.predict_split",
        "pipeline.qa.postprocess.postprocess_predictions",
    ]


def test_postprocessing_benchmark_calls_what_predict_split_calls_with_the_evaluate_stages_settings(
    monkeypatch, sample_raw, tokenizer
):
    """Run on the sample: the benchmark's post-processing call and the evaluate stage's (through
    predict_split) reach the same function with the same kinds of columns and the same settings,
    and the benchmark's three answers agree."""
    import numpy as np

    from pipeline.qa import postprocess, predictions
    from pipeline.qa.features import prepare_validation_features
    from pipeline.runtime.config import TokenizeConfig

    sys.path.insert(0, str(PROJECT_ROOT / "benchmarks"))
    import speed  # noqa: E402

    examples = sample_raw["validation"].select(range(60)).flatten_indices()
    features = examples.map(
        prepare_validation_features,
        batched=True,
        remove_columns=examples.column_names,
        fn_kwargs={"tokenizer": tokenizer, "cfg": TokenizeConfig(max_length=128, stride=32)},
        keep_in_memory=True,
    )
    cfg = speed.evaluate_stage_config()
    assert speed.postprocess_predictions is predictions.postprocess_predictions is postprocess.postprocess_predictions

    def recorder(calls):
        def spy(*args):
            calls.append(args)
            return postprocess.postprocess_predictions(*args)

        return spy

    ours, stage = [], []
    monkeypatch.setattr(speed, "postprocess_predictions", recorder(ours))
    monkeypatch.setattr(predictions, "postprocess_predictions", recorder(stage))
    result = speed.bench_postprocessing(examples, features, cfg)
    predictions.predict_split(
        lambda batch: (np.zeros(batch["input_ids"].shape, np.float32),) * 2,
        examples,
        features,
        cfg.evaluate,
        cfg.data.version_2_with_negative,
        progress=False,
    )

    assert len(ours) == 3 and len(stage) == 1  # best of 3
    assert [type(a) for a in ours[0]] == [type(a) for a in stage[0]]
    assert (
        ours[0][6:]
        == stage[0][6:]
        == (cfg.evaluate.n_best, cfg.evaluate.max_answer_length, False, cfg.evaluate.null_score_diff_threshold)
    )
    assert [list(a) for a in ours[0][:3]] == [list(a) for a in stage[0][:3]]
    assert result["function"] == result["ours"]["function"] == "pipeline.qa.postprocess.postprocess_predictions"
    assert result["arguments"] == {
        "n_best": 20,
        "max_answer_length": 30,
        "version_2_with_negative": False,
        "null_score_diff_threshold": 0.0,
    }
    assert result["identical_predictions"] and result["identical_nbest"]
    assert result["questions"] == 60 and result["features"] == features.num_rows > 60


# --- the rules on made-up code: each catches what it is for ---------------------------------


def made_up(benchmark_source: str, **extra: str) -> tuple[Project, Benchmark]:
    sources = {
        "pipeline": "",
        "pipeline.qa": "",
        "pipeline.qa.post": textwrap.dedent("""
            class Offsets:
                @classmethod
                def from_dataset(cls, d):
                    return cls()
                @classmethod
                def from_lists(cls, l):
                    return cls()
            def postprocess(ids, offsets):
                return _rank(ids)
            def best_spans(ids, offsets):
                return _rank(ids)
            def _rank(ids):
                return ids
        """),
        "pipeline.evaluate": textwrap.dedent("""
            from pipeline.qa.post import Offsets, postprocess
            def main():
                return postprocess([], Offsets.from_dataset(None))
        """),
        "pipeline.export": textwrap.dedent("""
            import mlflow.pyfunc
            from pipeline.qa.post import Offsets, best_spans
            class Served(mlflow.pyfunc.PythonModel):
                def predict(self, context, frame):
                    return best_spans(frame, Offsets.from_lists(frame))
                def unused(self):
                    return None
            def model_kwargs():
                return {"python_model": Served()}
            def main():
                mlflow.pyfunc.log_model(**model_kwargs())
        """),
        "bench": textwrap.dedent(benchmark_source),
        **{k: textwrap.dedent(v) for k, v in extra.items()},
    }
    project = Project(sources)
    return project, Benchmark(project, "bench", [m for m in sources if not m.startswith("pipeline")])


ROOTS = ("pipeline.evaluate.main",)

TIMES_BEST_SPANS = textwrap.dedent("""
    import time
    from pipeline.qa.post import Offsets, best_spans, postprocess
    TIMED_PRODUCTION_CODE = {"post": ("bench_post", ("pipeline.qa.post.best_spans",
                                                     "pipeline.qa.post.Offsets.from_dataset"))}
    def bench_post(ids, data):
        started = time.perf_counter()
        best_spans(ids, Offsets.from_dataset(data))
        seconds = time.perf_counter() - started
        return seconds
""")


def test_a_function_no_stage_calls_is_reported_with_what_the_stage_runs_instead():
    project, bench = made_up(TIMES_BEST_SPANS)
    problems = unreached(project, bench, "post", ROOTS)
    assert len(problems) == 1 and problems[0].startswith("pipeline.qa.post.best_spans: no stage's main calls it")
    assert "postprocess" in problems[0] and "Offsets.from_dataset" in problems[0]
    fixed, bench = made_up(TIMES_BEST_SPANS.replace("best_spans", "postprocess"))
    assert unreached(fixed, bench, "post", ROOTS) == []


def test_a_misspelled_declaration_is_reported():
    project, bench = made_up(TIMES_BEST_SPANS.replace('"pipeline.qa.post.best_spans"', '"pipeline.qa.post.bestspans"'))
    assert unreached(project, bench, "post", ROOTS) == ["pipeline.qa.post.bestspans: no such function in the project"]


def test_a_declared_function_the_section_does_not_call_is_reported():
    project, bench = made_up(
        TIMES_BEST_SPANS.replace("best_spans(ids, Offsets.from_dataset(data))", "postprocess(ids, None)")
    )
    problems = uncalled(project, bench, "post")
    assert [p.split(":")[0] for p in problems] == [
        "pipeline.qa.post.best_spans",
        "pipeline.qa.post.Offsets.from_dataset",
    ]


def test_an_undeclared_function_called_while_timing_is_reported_even_through_a_helper():
    source = """
        import time
        from pipeline.qa.post import Offsets, best_spans, postprocess
        TIMED_PRODUCTION_CODE = {"post": ("bench_post", ("pipeline.qa.post.postprocess",))}
        def run(ids):
            return best_spans(ids, None)
        def bench_post(ids):
            offsets = Offsets.from_dataset(ids)  # before the clock: setup
            started = time.perf_counter()
            postprocess(ids, offsets)
            run(ids)
            seconds = time.perf_counter() - started
            best_spans(ids, offsets)  # after it: not timed
            return seconds
    """
    project, bench = made_up(source)
    assert undeclared(project, bench) == [
        "bench.bench_post times ['pipeline.qa.post.best_spans'], which section 'post' does not declare "
        "(it declares ['pipeline.qa.post.postprocess'])"
    ]
    assert bench.timed_references("bench.bench_post") == {"pipeline.qa.post.postprocess", "pipeline.qa.post.best_spans"}


def test_timing_outside_every_declared_section_is_reported():
    source = TIMES_BEST_SPANS.replace("TIMED_PRODUCTION_CODE = {", "TIMED_PRODUCTION_CODE = {}\nUNUSED = {")
    project, bench = made_up(source)
    assert undeclared(project, bench) == [
        "bench.bench_post times ['pipeline.qa.post.Offsets.from_dataset', 'pipeline.qa.post.best_spans'], "
        "but no section of TIMED_PRODUCTION_CODE runs bench.bench_post"
    ]


def test_subprocess_stage_commands_count_as_calls_to_their_main():
    source = """
        import subprocess, sys, time
        STAGES = ("evaluate", "export")
        TIMED_PRODUCTION_CODE = {"all": ("main", ("pipeline.evaluate.main",))}
        def main():
            started = time.perf_counter()
            for stage in STAGES:
                subprocess.run([sys.executable, "-m", f"pipeline.{stage}"])
            return time.perf_counter() - started
    """
    project, bench = made_up(source)
    assert bench.timed_references("bench.main") == {"pipeline.evaluate.main", "pipeline.export.main"}
    assert undeclared(project, bench) == [
        "bench.main times ['pipeline.export.main'], which section 'all' does not declare "
        "(it declares ['pipeline.evaluate.main'])"
    ]


def test_the_served_model_is_the_exports_product_and_loading_it_calls_its_predict():
    source = """
        import time
        import mlflow
        from pipeline import export
        TIMED_PRODUCTION_CODE = {"batch": ("bench_batch", ("pipeline.export.Served.predict",))}
        def save():
            mlflow.pyfunc.save_model("m", **export.model_kwargs())
        def bench_batch(frame):
            model = mlflow.pyfunc.load_model("m")
            started = time.perf_counter()
            model.predict(frame)
            return time.perf_counter() - started
    """
    project, bench = made_up(source)
    assert bench.timed_references("bench.bench_batch") == {"pipeline.export.Served.predict"}
    assert uncalled(project, bench, "batch") == []
    assert unreached(project, bench, "batch", ROOTS) != []  # the evaluate stage alone does not create it
    assert unreached(project, bench, "batch", ("pipeline.export.main",)) == []
    reached = project.reach(("pipeline.export.main",))
    assert "pipeline.qa.post.Offsets.from_lists" in reached and "pipeline.export.Served.unused" in reached
    assert "pipeline.qa.post.postprocess" not in reached
    # without the export's model_kwargs the benchmark serves no model of ours: nothing to resolve
    _, alone = made_up(source.replace("**export.model_kwargs()", ""))
    assert alone.timed_references("bench.bench_batch") == {PYFUNC_PREDICT}


def test_timed_regions_end_where_the_clock_is_read():
    project, _ = made_up("""
        import time
        def f(a, b, c):
            a()
            t0 = time.perf_counter()
            b()
            elapsed = time.perf_counter() - t0
            c()
            for _ in range(3):
                t1 = time.perf_counter()
                c()
                a(t1)
    """)
    regions = timed_regions(project, "bench.f")
    assert [[ast.unparse(s) for s in r] for r in regions] == [
        ["b()", "elapsed = time.perf_counter() - t0"],
        ["c()", "a(t1)"],
    ]
