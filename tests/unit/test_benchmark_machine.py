"""The machine line every benchmark writes beside its figures (benchmarks/machine.py)."""

from __future__ import annotations

import sys

from tests.helpers.project import PROJECT_ROOT

sys.path.insert(0, str(PROJECT_ROOT / "benchmarks"))

from machine import describe_machine  # noqa: E402

AMD = """processor\t: 0
model name\t: AMD EPYC
siblings\t: 2
cpu cores\t: 2
flags\t\t: fpu avx512f avx512_bf16 avx512_vnni

processor\t: 1
model name\t: AMD EPYC
siblings\t: 2
cpu cores\t: 2
flags\t\t: fpu avx512f avx512_bf16 avx512_vnni
"""

XEON = """processor\t: 0
model name\t: Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz
siblings\t: 2
cpu cores\t: 1
flags\t\t: fpu avx512f avx512_bf16 amx_bf16 amx_tile amx_int8

processor\t: 1
model name\t: Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz
siblings\t: 2
cpu cores\t: 1
flags\t\t: fpu avx512f avx512_bf16 amx_bf16 amx_tile amx_int8
"""


def test_two_cores_with_avx512_bf16_and_no_amx():
    assert describe_machine(AMD).startswith("AMD EPYC, 2 CPUs (2 cores x 1 thread), AVX512-BF16, no AMX, ")


def test_one_hyperthreaded_core_with_amx():
    # Two CPUs that are one core's two hyperthreads train at about one core's speed: the line says so.
    assert describe_machine(XEON).startswith(
        "Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz, 2 CPUs (1 core x 2 threads), AVX512-BF16, AMX, "
    )


def test_no_cpuinfo_falls_back_to_the_platform():
    line = describe_machine("")
    assert "CPUs" in line and "AMX" not in line
