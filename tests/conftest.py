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


@pytest.fixture(scope="module")
def one_thread():
    """Evaluate as search workers do (one thread each): on a shared, busy machine two
    threads per process can slow a run past the tier's time limit."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def comparable(result) -> dict:
    """An evaluation result without its wall time: what must reproduce exactly."""
    data = result.to_dict()
    del data["seconds"]
    return data
