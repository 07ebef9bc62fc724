"""Shared fixtures of the Ray tests: a local Ray cluster whose workers can import the test modules.

Ray workers import worker classes by module name (`test_worker_group.SumWorker`,
`weight_sync_support.ProbeInferWorker`), so tests/ray goes on their PYTHONPATH while the cluster runs.
"""

import os

import pytest

from roll.distributed.ray_runtime import RayRuntime

RAY_TESTS_DIR = os.path.dirname(os.path.abspath(__file__))


@pytest.fixture(scope="module")
def ray_cluster():
    """A 2-CPU local Ray cluster for one test module, with tests/ray on the workers' PYTHONPATH."""
    previous = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (RAY_TESTS_DIR, previous) if p)
    try:
        with RayRuntime(num_cpus=2):
            yield
    finally:
        if previous is None:
            os.environ.pop("PYTHONPATH")
        else:
            os.environ["PYTHONPATH"] = previous
