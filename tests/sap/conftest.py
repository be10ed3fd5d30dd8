"""One torch thread in the SAP tests: on a small shared CPU, OpenMP spin-waiting across busy
cores makes tiny models slower with more threads, not faster."""
import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)
