import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def one_torch_thread():
    """The tests use small batches, which gain nothing from a second thread; on a 2-core machine
    shared with other jobs, two threads spin-wait for each other whenever one is preempted."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
