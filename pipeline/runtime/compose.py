"""Write params.yaml as the Hydra composition of conf/ (what `dvc exp run` writes).

    python -m pipeline.runtime.compose [override ...]      e.g. train=course tokenize.max_length=256
    make params                                           (the same, no overrides)

Uses DVC's own composition function, so the file is byte-for-byte what DVC would write.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"


def compose_params_text(overrides: list[str] | None = None, conf_dir: Path = CONF_DIR) -> str:
    from dvc.utils.hydra import compose_and_dump

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "params.yaml"
        compose_and_dump(out, str(conf_dir), None, "config", str(conf_dir), list(overrides or []))
        return out.read_text(encoding="utf-8")


def main() -> None:
    text = compose_params_text(sys.argv[1:])
    Path("params.yaml").write_text(text, encoding="utf-8")
    print(text, end="")


if __name__ == "__main__":
    main()
