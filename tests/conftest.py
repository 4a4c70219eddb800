import os

import pytest

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


@pytest.fixture(scope="session")
def ray_local():
    """One local Ray instance for the whole test session (starting Ray takes seconds)."""
    import ray

    from evoprog.search.workers import start_ray

    start_ray(num_cpus=2)
    yield
    ray.shutdown()
