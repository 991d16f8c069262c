"""What a benchmark ran on, in one line for its results JSON and its printed table.

A ratio measured side by side travels between machines; the absolute figures do not, and the
things that move them on a 2-core box are the CPU model, whether the two CPUs are two cores or two
hyperthreads of one, and whether bfloat16 runs natively (AVX512-BF16, AMX) or is emulated.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path


def describe_machine(cpuinfo: str | None = None) -> str:
    """The machine's description, e.g. "AMD EPYC, 2 CPUs (2 cores x 1 thread), AVX512-BF16, no AMX,
    Linux", from /proc/cpuinfo's text (read here when not given); the platform's own words where there is no cpuinfo."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            cpuinfo = ""
    fields: dict[str, str] = {}
    for line in cpuinfo.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() not in fields:  # the first processor speaks for all
            fields[key.strip()] = value.strip()
    if "model name" not in fields:
        return f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, {platform.system()}"
    cpus = sum(1 for line in cpuinfo.splitlines() if line.startswith("processor"))
    cores, siblings = fields.get("cpu cores"), fields.get("siblings")
    topology = ""
    if cores and siblings and cores.isdigit() and siblings.isdigit() and int(cores):
        threads = int(siblings) // int(cores)
        topology = f" ({cores} core{'s' if int(cores) > 1 else ''} x {threads} thread{'s' if threads > 1 else ''})"
    flags = set(fields.get("flags", "").split())
    bf16 = "AVX512-BF16" if "avx512_bf16" in flags else "no AVX512-BF16"
    amx = "AMX" if "amx_bf16" in flags else "no AMX"
    return f"{fields['model name']}, {cpus} CPUs{topology}, {bf16}, {amx}, {platform.system()}"
