import pytest

from tdrm_rl.cli.runtime import set_runtime_defaults

set_runtime_defaults()  # the CLI's environment: offline hubs, local Ray without auth, the DeepSpeed JIT cache


def pytest_collection_modifyitems(config, items):
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if item.get_closest_marker("gpu") is not None:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def ray_local():
    """One local Ray instance for the whole session; actors ask for fractional CPUs."""
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="WARNING")
    yield ray
    ray.shutdown()
