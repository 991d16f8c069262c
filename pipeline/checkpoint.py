"""Stage 0, checkpoint: model.checkpoint -> models/checkpoint.json (what it is, by content).

    python -m pipeline.checkpoint [--params params.yaml]

model.checkpoint is a name (a hub model, a local directory, package://...): DVC cannot hash
what it points at. This stage does, on every `dvc repro` (always_changed in dvc.yaml, under
a second for the packaged model): the md5 of the files loading reads, each file's md5 and,
for a hub model, the resolved revision. tokenize and train depend on the record, so a
checkpoint whose files changed under the same name (another installed version of the
package, an edited local directory) re-tokenizes and retrains; an unchanged one leaves the
record byte-identical and nothing after it reruns.
"""

from __future__ import annotations

import argparse

from pipeline.qa.modeling import checkpoint_fingerprint
from pipeline.runtime.config import load_config
from pipeline.runtime.errors import stage_entry_point
from pipeline.runtime.files import write_json
from pipeline.runtime.paths import CHECKPOINT_FILE, PARAMS_FILE


@stage_entry_point
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default=str(PARAMS_FILE))
    args = parser.parse_args()
    checkpoint = load_config(args.params).model.checkpoint
    record = {"checkpoint": checkpoint, **checkpoint_fingerprint(checkpoint)}
    write_json(CHECKPOINT_FILE, record)
    print(f"model.checkpoint={checkpoint!r}: md5 {record['md5']} ({len(record['files'])} files, "
          f"{record['size'] / 1e6:.1f} MB){' at revision ' + record['revision'] if record['revision'] else ''}")


if __name__ == "__main__":
    main()
