"""Python imports this at start-up when its folder is on PYTHONPATH (tests/conftest.py's baseline
build puts it there for the first `dvc repro`). In a DVC stage's process (DVC_STAGE is set) with
SQUAD_PIPELINE_RECORD_PARAMS naming a folder, the params the stage reads are recorded into
<folder>/<stage>.json (tests/helpers/record_params.py); anywhere else it does nothing."""

import os

if os.environ.get("DVC_STAGE") and os.environ.get("SQUAD_PIPELINE_RECORD_PARAMS"):
    import sys

    sys.path.insert(0, os.getcwd())  # the stage's repo (python -m adds it only after start-up)
    from tests.helpers import record_params

    record_params.record_at_exit(
        os.path.join(os.environ["SQUAD_PIPELINE_RECORD_PARAMS"], os.environ["DVC_STAGE"].split(":")[-1] + ".json")
    )
