"""Small file helpers: outputs appear whole or not at all; JSON, CSV, reproducible datasets."""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterable, Iterator


@contextlib.contextmanager
def atomic_output_dir(out_dir: str | Path) -> Iterator[Path]:
    """Yield a temp dir beside `out_dir`; on success it replaces `out_dir`, on error it is removed.

    A stage that fails half way therefore never leaves a partial output, and an earlier
    output stays in place until the new one is complete.
    """
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    tmp.chmod(0o755)  # mkdtemp makes it private; outputs are shared through the DVC cache
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
    if out_dir.exists():
        out_dir.rename(old)
    tmp.rename(out_dir)
    shutil.rmtree(old, ignore_errors=True)


def write_json(path: str | Path, data: Any) -> None:
    """Write JSON atomically (temp file + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)  # gone after a successful replace; removed after a failed one


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def save_dataset_dict(dataset_dict: Any, path: str | Path) -> None:
    """`save_to_disk`, made byte-for-byte reproducible.

    datasets stores a random `_fingerprint` for in-memory datasets; replacing it with a
    hash of the Arrow data keeps identical content identical on disk, so DVC does not
    see a change (and rerun later stages) when the data did not change.
    """
    path = Path(path)
    dataset_dict.save_to_disk(str(path))
    for state_file in sorted(path.glob("*/state.json")):
        digest = hashlib.sha256()
        for arrow_file in sorted(state_file.parent.glob("*.arrow")):
            digest.update(arrow_file.read_bytes())
        state = json.loads(state_file.read_text(encoding="utf-8"))
        state["_fingerprint"] = digest.hexdigest()[:16]
        state_file.write_text(json.dumps(state, indent=2, sort_keys=True), encoding="utf-8")


def write_csv(path: str | Path, rows: list[dict]) -> None:
    """Rows as CSV with a header (the shape `dvc plots` reads)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]) if rows else ["step"])
        writer.writeheader()
        writer.writerows(rows)


def file_md5(file: str | Path) -> str:
    digest = hashlib.md5()
    with Path(file).open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def dvc_md5(path: str | Path, files: Iterable[Path] | None = None) -> str:
    """The md5 DVC records for a file or directory in dvc.lock (DVC 3: a file's plain md5; a
    directory's is the md5 of its sorted [{"md5", "relpath"}] listing, plus ".dir"). `files`:
    hash only these files of the directory (as if it held nothing else)."""
    path = Path(path)
    if path.is_file():
        return file_md5(path)
    chosen = [f for f in path.rglob("*") if f.is_file()] if files is None else list(files)
    entries = sorted(
        ({"md5": file_md5(f), "relpath": f.relative_to(path).as_posix()} for f in chosen), key=lambda e: e["relpath"]
    )
    return hashlib.md5(json.dumps(entries, sort_keys=True).encode("utf-8")).hexdigest() + ".dir"
