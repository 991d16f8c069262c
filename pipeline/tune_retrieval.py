"""Stage tune_retrieval: models/trained/ + data/raw's train split -> models/retrieval.json: the k
(passages read per question) and weight w of (1 - w) * BM25 + w * reader score that retrieve-then-read
uses (the export carries them; the open-domain evaluation reads them).

    python -m pipeline.tune_retrieval [--params params.yaml]

Chosen by F1 on the first retrieve.tune_questions answerable *train* questions, each answered from
an index of all train paragraphs built like models/index (model.checkpoint's tokenizer, the
tokenize windows, retrieve.k1 / b / stemmer), never on validation questions: k among
retrieve.k_choices, w among retrieve.weight_steps values from 0 to 1 (ties: smaller k, then
smaller w). Each question's top max(k_choices) passages are read once, in retrieve.tune_precision
(the choice is not a registered score: `auto` reads in bfloat16 where the CPU has it).
"""

from __future__ import annotations

import time

import pipeline  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
from pipeline.qa.modeling import read_windows
from pipeline.qa.predictions import LoadedModel
from pipeline.qa.squad import answerable, load_saved
from pipeline.qa.retrieval import Bm25Settings, paragraph_index
from pipeline.qa.open_domain import tune_on_questions, weight_grid
from pipeline.runtime.config import PipelineConfig, stage_config
from pipeline.runtime.errors import PipelineError, stage_entry_point
from pipeline.runtime.files import write_json
from pipeline.runtime.lineage import check_model_windows
from pipeline.runtime.paths import RAW_DIR, RETRIEVAL_FILE, TRAINED_DIR, require_output


def tune_retrieval(cfg: PipelineConfig) -> dict:
    rt, ev = cfg.retrieve, cfg.evaluate
    require_output(TRAINED_DIR, "config.json", "trained model")
    require_output(RAW_DIR, "dataset_dict.json", "saved dataset")
    check_model_windows(read_windows(TRAINED_DIR) or {}, cfg, TRAINED_DIR)
    started = time.perf_counter()
    train = load_saved(RAW_DIR)["train"]
    questions = answerable(train)
    questions = questions.select(range(min(rt.tune_questions, questions.num_rows)))
    if questions.num_rows == 0:
        raise PipelineError(f"{RAW_DIR}: the train split has no answerable question to choose k and the weight on")
    loaded = LoadedModel.load(TRAINED_DIR, rt.tune_precision, key="retrieve.tune_precision")
    pool = paragraph_index(train, loaded.tokenizer, cfg.tokenize, Bm25Settings(rt.k1, rt.b, rt.stemmer), "train")
    reader = loaded.reader(cfg.tokenize, ev.n_best, ev.max_answer_length, ev.batch_size)
    gold = [list(a["text"]) for a in questions["answers"]]
    k, weight, tuned_f1 = tune_on_questions(
        reader, pool, list(questions["question"]), gold, rt.k_choices, weight_grid(rt.weight_steps)
    )
    choice = {
        "k": k,
        "weight": weight,
        "tune_questions": questions.num_rows,
        "tune_f1": tuned_f1,
        "tune_precision_policy": loaded.policy,
        "tune_passages": pool.meta["passages"],
        "bm25": pool.meta["bm25"],  # the settings k and weight go with (the export checks its index has them)
    }
    write_json(RETRIEVAL_FILE, choice)
    print(
        f"chose k={k}, weight={weight} on {questions.num_rows} train questions over {pool.meta['passages']} "
        f"train passages (F1 {tuned_f1:.2f}) in {time.perf_counter() - started:.1f} s -> {RETRIEVAL_FILE}"
    )
    return choice


@stage_entry_point
def main() -> None:
    cfg, _ = stage_config(__doc__)
    tune_retrieval(cfg)


if __name__ == "__main__":
    main()
