"""The benchmark runner names its result files after the machine."""

from __future__ import annotations

import pytest

from bench.__main__ import machine_tag


@pytest.mark.parametrize("cpu, tag", [
    ("AMD EPYC", "2core-amd-epyc"),
    ("AMD EPYC 7763 64-Core Processor", "2core-amd-epyc"),
    ("Intel(R) Xeon(R) Processor", "2core-intel-xeon"),
    ("Intel(R) Core(TM) i7-8700 CPU @ 3.20GHz", "2core-intel-core"),
])
def test_machine_tag_names_the_cpu(cpu: str, tag: str) -> None:
    """Two CPUs with the same core count get different file names."""
    assert machine_tag({"cpu": cpu, "cores": 2}) == tag


def test_machine_tag_prefers_the_gpu_and_falls_back_to_the_architecture() -> None:
    assert machine_tag({"cpu": "AMD EPYC", "cores": 16, "gpu": "NVIDIA H100 80GB HBM3"}) == (
        "nvidia-h100-80gb-hbm3")
    assert machine_tag({"cpu": "", "cores": 2}).startswith("2core-")
