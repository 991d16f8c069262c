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


from pipeline.qa.modeling import checkpoint_fingerprint
from pipeline.runtime.config import stage_config
from pipeline.runtime.errors import stage_entry_point
from pipeline.runtime.files import write_json
from pipeline.runtime.paths import CHECKPOINT_FILE


@stage_entry_point
def main() -> None:
    cfg, _ = stage_config(__doc__)
    checkpoint = cfg.model.checkpoint
    record = {"checkpoint": checkpoint, **checkpoint_fingerprint(checkpoint)}
    write_json(CHECKPOINT_FILE, record)
    print(
        f"model.checkpoint={checkpoint!r}: md5 {record['md5']} ({len(record['files'])} files, "
        f"{record['size'] / 1e6:.1f} MB){' at revision ' + record['revision'] if record['revision'] else ''}"
    )


if __name__ == "__main__":
    main()
