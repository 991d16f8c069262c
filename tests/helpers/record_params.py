"""Record which params a stage reads: record_at_exit, called by record_site/sitecustomize.py in
each stage process of the tests' baseline `dvc repro`. pipeline.runtime.config.load_config is wrapped
to return the typed config as instances of recording subclasses of its dataclasses: every
leaf a stage reads (`section.key`) is recorded, whether the stage reads it itself or passes a
section to the library, and isinstance, asdict and replace work as on the real config. The
keys go to `out` when the process exits, whatever its status.

Reads that only name or fill MLflow records are not inputs (dvc.yaml's header): the functions
in RECORDS get the config unwrapped, so their reads are not recorded.
"""

from __future__ import annotations

import importlib
import json
from dataclasses import fields, is_dataclass
from pathlib import Path
from typing import Any, Callable

from pipeline.runtime import config

READ: set[str] = set()
# (module, function): what reads the config only for MLflow records: the params logged to a run
# (config.flatten), a run's name (tracking.run_name) and a logged dataset's (tracking.data_label).
# config first: tracking imports flatten by name.
RECORDS = (
    ("pipeline.runtime.config", "flatten"),
    ("pipeline.runtime.tracking", "run_name"),
    ("pipeline.runtime.tracking", "data_label"),
)
_RECORDING: dict[tuple[type, str], type] = {}


def recording_class(cls: type, prefix: str) -> type:
    """A subclass of the dataclass `cls` that records reads of its leaf fields as prefix + name."""
    key = (cls, prefix)
    if key not in _RECORDING:
        names = {f.name for f in fields(cls)}

        def __getattribute__(self, name: str) -> Any:
            value = object.__getattribute__(self, name)
            if name in names and not is_dataclass(value):
                READ.add(prefix + name)
            return value

        def __reduce_ex__(self, protocol: int) -> Any:
            # Pickled (a datasets fingerprint hashing a map's fn_kwargs, a worker process): the
            # whole section goes where these reads cannot be seen, so all of it counts as read;
            # it unpickles as the plain dataclass (no recording class to find in a worker).
            values = [object.__getattribute__(self, f.name) for f in fields(cls)]
            READ.update(prefix + f.name for f, value in zip(fields(cls), values) if not is_dataclass(value))
            return cls, tuple(values)

        _RECORDING[key] = type(
            cls.__name__,
            (cls,),
            {
                "__getattribute__": __getattribute__,
                "__reduce_ex__": __reduce_ex__,
                "__module__": cls.__module__,
                "_unrecorded": cls,
            },
        )
    return _RECORDING[key]


def recording(cfg: Any, prefix: str = "") -> Any:
    """A recording copy of a config dataclass (its sections recording `section.` keys)."""
    copy = object.__new__(recording_class(type(cfg), prefix))
    for f in fields(cfg):
        value = getattr(cfg, f.name)
        object.__setattr__(copy, f.name, recording(value, f"{prefix}{f.name}.") if is_dataclass(value) else value)
    return copy


def unrecorded(value: Any) -> Any:
    """The plain config behind a recording one (anything else unchanged), read without recording."""
    if not is_dataclass(value) or isinstance(value, type):
        return value
    cls = getattr(type(value), "_unrecorded", type(value))
    return cls(**{f.name: unrecorded(object.__getattribute__(value, f.name)) for f in fields(value)})


def without_recording(function: Callable) -> Callable:
    """`function` given plain configs: what it reads for an MLflow record is not recorded."""

    def call(*args: Any, **kwargs: Any) -> Any:
        return function(*[unrecorded(a) for a in args], **{k: unrecorded(v) for k, v in kwargs.items()})

    return call


def install() -> None:
    """Wrap load_config and the RECORDS functions, before the stage imports them by name."""
    load_config = config.load_config
    config.load_config = lambda *args, **kwargs: recording(load_config(*args, **kwargs))
    for module_name, function in RECORDS:
        module = importlib.import_module(module_name)
        setattr(module, function, without_recording(getattr(module, function)))


def record_at_exit(out: str | Path) -> None:
    """Record this process's reads, written to `out` when it exits (whatever its status)."""
    import atexit

    install()
    atexit.register(lambda: Path(out).write_text(json.dumps(sorted(READ))))
