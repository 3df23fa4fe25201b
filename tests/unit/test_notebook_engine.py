"""The stages' papermill engine: kernel channels that poll in slices (fsadlib.notebook_engine)."""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from queue import Empty

import pytest

from fsadlib import notebook_engine
from fsadlib.notebook_engine import SlicedPollChannel, SlicedPollClient, SlicedPollKernelManager, engine_class
from fsadlib.pipeline import ENGINE


class MissedWakeupSocket:
    """A socket whose message is queued from the start, but whose poll misses it ``misses`` times: each
    missed poll sleeps its whole timeout and reports nothing (zeromq/pyzmq#1558). Records every timeout."""

    def __init__(self, misses: int) -> None:
        self.misses = misses
        self.timeouts: list[int | None] = []

    async def poll(self, timeout: int | None = None) -> int:
        self.timeouts.append(timeout)
        if self.misses:
            self.misses -= 1
            await asyncio.sleep((timeout or 0) / 1000)
            return 0
        return 1


def channel(socket: MissedWakeupSocket) -> SlicedPollChannel:
    ch = SlicedPollChannel.__new__(SlicedPollChannel)   # no real zmq socket or session needed
    ch.socket = socket

    async def recv() -> dict:
        return {"msg": "reply"}

    ch._recv = recv
    return ch


def run_async(coro):
    """Run ``coro`` to completion in a fresh event loop of its own thread (the suite's thread may hold a
    running loop, e.g. left by the browser tests)."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


@pytest.fixture
def short_slice(monkeypatch):
    monkeypatch.setattr(notebook_engine, "POLL_SLICE_S", 0.05)


def test_a_missed_wakeup_costs_one_slice_not_the_whole_timeout(short_slice):
    socket = MissedWakeupSocket(misses=1)
    start = time.monotonic()
    msg = run_async(channel(socket).get_msg(timeout=30))
    assert msg == {"msg": "reply"}
    assert time.monotonic() - start < 5          # one 50 ms slice, not 30 s
    assert socket.timeouts[0] == 50 and len(socket.timeouts) == 2


def test_no_deadline_keeps_polling_in_slices(short_slice):
    socket = MissedWakeupSocket(misses=3)
    assert run_async(channel(socket).get_msg(timeout=None)) == {"msg": "reply"}
    assert socket.timeouts == [50, 50, 50, 50]


def test_the_deadline_still_raises_empty(short_slice):
    socket = MissedWakeupSocket(misses=10**6)
    start = time.monotonic()
    with pytest.raises(Empty):
        run_async(channel(socket).get_msg(timeout=0.12))
    elapsed = time.monotonic() - start
    assert 0.12 <= elapsed < 2
    assert socket.timeouts[:2] == [50, 50] and max(socket.timeouts) <= 50 and len(socket.timeouts) >= 3


def test_a_zero_timeout_polls_once():
    socket = MissedWakeupSocket(misses=1)
    with pytest.raises(Empty):
        run_async(channel(socket).get_msg(timeout=0))
    assert socket.timeouts == [0]


def test_the_engine_disables_the_runners_read_record(monkeypatch):
    from fsadlib import reads

    seen = []
    monkeypatch.setattr(reads, "_disabled", False)
    monkeypatch.setattr("papermill.engines.NBClientEngine.execute_managed_notebook",
                        classmethod(lambda cls, nb_man, kernel_name, **kw: seen.append(kw) or "done"))
    assert engine_class().execute_managed_notebook(None, "python3", log_output=False) == "done"
    assert reads._disabled and seen[0]["kernel_manager_class"] is SlicedPollKernelManager


def test_the_stages_engine_is_registered_with_papermill_and_wired_to_the_sliced_channels():
    from papermill.engines import papermill_engines

    assert papermill_engines.get_engine(ENGINE) is engine_class() is notebook_engine.SlicedPollEngine
    client = SlicedPollKernelManager().client()
    assert isinstance(client, SlicedPollClient)
    for name in ("shell", "iopub", "stdin", "control"):
        assert getattr(SlicedPollClient, f"{name}_channel_class").default_value is SlicedPollChannel
