import pytest
import torch


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (run on the H200: PYTHONPATH=. python3 -m pytest tests/gpu)")
    for item in items:
        if "tests/gpu" in str(item.fspath):
            item.add_marker(skip)


@pytest.fixture(scope="session", autouse=True)
def native_dispatcher():
    """Build jitlab's C++ dispatcher before the first test (it is built in the background otherwise),
    so the suite checks launches through it; its build time is printed with -s."""
    from jitlab._triton import native

    mod, why = native.DISPATCH.get(wait=True)
    print(f"\njitlab native dispatcher: {why} ({native.DISPATCH.seconds:.1f} s)")
    return mod
