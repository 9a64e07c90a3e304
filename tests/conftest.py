"""Suite-wide settings."""
import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    """One intra-op thread: on a busy 2-core machine, 2 OpenMP threads make scatter-adds ~100x slower,
    and the DDP tests already run two processes side by side.
    """
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def pytest_collection_modifyitems(items):
    """A multi-process test is always a slow one: `-m "not slow"` leaves every DDP test out."""
    for item in items:
        if item.get_closest_marker("ddp") and not item.get_closest_marker("slow"):
            item.add_marker(pytest.mark.slow)
