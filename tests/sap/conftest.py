"""One torch thread in the SAP tests: on a small shared CPU, OpenMP spin-waiting across busy
cores makes tiny models slower with more threads, not faster."""
from contextlib import contextmanager

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture
def interrupt_at_call(monkeypatch):
    """`with interrupt_at_call(LossClass, n): train(...)`: the run is killed (KeyboardInterrupt, as
    a killed job) at the loss's n-th call; the loss is restored after the block."""

    @contextmanager
    def interrupt(cls, n: int):
        original, calls = cls.__call__, [0]

        def call(self, *args, **kwargs):
            calls[0] += 1
            if calls[0] == n:
                raise KeyboardInterrupt
            return original(self, *args, **kwargs)

        monkeypatch.setattr(cls, "__call__", call)
        with pytest.raises(KeyboardInterrupt):
            yield
        monkeypatch.setattr(cls, "__call__", original)

    return interrupt
