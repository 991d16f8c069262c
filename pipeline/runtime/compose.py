"""Write params.yaml as the Hydra composition of conf/ (what `dvc exp run` writes).

    python -m pipeline.runtime.compose [override ...]      e.g. train=course tokenize.max_length=256
    make params                                           (the same, no overrides)

Uses DVC's own composition function, so the file is byte-for-byte what DVC would write.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from pipeline.runtime.config import from_dict
from pipeline.runtime.errors import PipelineError, stage_entry_point

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"


def compose_params_text(overrides: list[str] | None = None, conf_dir: Path = CONF_DIR) -> str:
    """The composed params.yaml text; a key or option conf/ lacks stops with one line (PipelineError)."""
    from dvc.utils.hydra import compose_and_dump
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "params.yaml"
        try:
            compose_and_dump(out, str(conf_dir), None, "config", str(conf_dir), list(overrides or []))
        except (HydraException, OmegaConfBaseException) as err:
            lines = [line.strip() for line in str(err).split("Config search path")[0].splitlines() if line.strip()]
            what = " ".join(line for line in lines if not line.startswith("To append"))
            raise PipelineError(
                f"conf/: the overrides {' '.join(overrides or []) or '(none)'} do not compose: {what}; "
                "use a key or option of conf/config.yaml and its groups"
            ) from None
        return out.read_text(encoding="utf-8")


@stage_entry_point
def main() -> None:
    import yaml

    text = compose_params_text(sys.argv[1:])
    from_dict(yaml.safe_load(text), "params.yaml (composed)")  # a bad value stops here, params.yaml untouched
    Path("params.yaml").write_text(text, encoding="utf-8")
    print(text, end="")


if __name__ == "__main__":
    main()
