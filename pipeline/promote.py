"""Move the registered model's `champion` alias to a better version.

    python -m pipeline.promote [--version N | --alias candidate] [--name squad-qa] [--params params.yaml]

`champion` moves to the version (by default the one aliased `candidate`, i.e. the latest
export) only if its F1 beats the current champion's on the same evaluation data: both
versions' eval_data_digest tags (the DVC-style md5 of the validation questions) must be
equal. The first evaluated version becomes champion. Otherwise one line says why, and the
exit status is 1; --force moves it anyway (e.g. after the evaluation data changed). Serve the champion with
`mlflow models serve -m models:/squad-qa@champion --env-manager local`.

The registry is $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db (as for the stages).
"""

from __future__ import annotations

import argparse
import sys

from pipeline.runtime import registry, tracking
from pipeline.runtime.config import load_config
from pipeline.runtime.errors import stage_entry_point
from pipeline.runtime.paths import PARAMS_FILE


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--version", help="the version number to promote")
    which.add_argument("--alias", default=registry.CANDIDATE, help="the alias of the version to promote")
    parser.add_argument(
        "--force",
        action="store_true",
        help="move champion even if not better or evaluated on other data (says what it overrode)",
    )
    parser.add_argument("--name", help="registered model (default: mlflow.registered_model_name in --params)")
    parser.add_argument("--params", default=str(PARAMS_FILE))
    return parser.parse_args(argv)


def run(argv: list[str] | None = None) -> registry.Decision:
    from mlflow.tracking import MlflowClient

    args = parse_args(argv)
    name = args.name or load_config(args.params).mlflow.registered_model_name
    uri = tracking.tracking_uri()
    tracking.check_server(uri)
    return registry.promote(
        MlflowClient(tracking_uri=uri, registry_uri=uri), name, args.version or args.alias, force=args.force
    )


@stage_entry_point
def main() -> None:
    decision = run()
    print(decision.message, file=sys.stderr if decision.refused else sys.stdout)
    if decision.refused:
        sys.exit(1)


if __name__ == "__main__":
    main()
