"""The papermill engine of the pipeline (``papermill ... --engine fsadlib``): nbclient whose kernel
channels wait for a message in slices, so a missed wake-up costs at most ``POLL_SLICE_S`` seconds.

Why: pyzmq's asyncio poller can miss the wake-up of a message that is already queued on a socket; the
poll then returns only when its own timeout ends, and finds the message (zeromq/pyzmq#1558). nbclient
waits for a cell's execute reply with ONE poll whose timeout is the cell's execution timeout, so such a
miss stalls a finished cell until that timeout: the test suite saw cells of a few seconds take exactly
their 300 s ``--execution-timeout`` and then succeed, and without a timeout (papermill's default, the
DVC stages) the stage would wait for ever. :class:`SlicedPollChannel` polls for at most
``POLL_SLICE_S`` seconds at a time until the caller's deadline (``None``: no deadline), so a missed
wake-up is noticed at the next slice and the caller's timeout keeps its meaning (``Empty`` at the
deadline, as before).

Wiring: ``SlicedPollEngine`` (:func:`engine_class`) is papermill's nbclient engine with ``kernel_manager_class``
:class:`SlicedPollKernelManager`, whose clients (:class:`SlicedPollClient`) use the sliced channel for
shell, iopub, stdin and control. It is registered as papermill engine ``fsadlib`` (entry point in
pyproject.toml), and every stage command passes ``--engine fsadlib``
(:data:`fsadlib.pipeline.ENGINE`, :func:`fsadlib.pipeline.papermill`).
From Python: ``papermill.execute_notebook(..., engine_name="fsadlib")``.
"""

from __future__ import annotations

import functools
import time
from queue import Empty
from typing import Any

from jupyter_client.asynchronous import AsyncKernelClient
from jupyter_client.channels import AsyncZMQSocketChannel
from jupyter_client.manager import AsyncKernelManager
from traitlets import DottedObjectName, Type

from fsadlib import reads

#: longest single poll of a kernel socket, in seconds (the most a missed wake-up can cost)
POLL_SLICE_S = 1.0


class SlicedPollChannel(AsyncZMQSocketChannel):
    """A kernel channel whose ``get_msg(timeout)`` polls in slices of at most :data:`POLL_SLICE_S`."""

    async def get_msg(self, timeout: float | None = None) -> dict[str, Any]:  # type: ignore[override]
        """The next message; ``Empty`` when none arrived within ``timeout`` seconds (``None``: wait)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = POLL_SLICE_S if deadline is None else min(POLL_SLICE_S, max(0.0, deadline - time.monotonic()))
            if await self.socket.poll(int(left * 1000)):
                return await self._recv()
            if deadline is not None and time.monotonic() >= deadline:
                raise Empty


class SlicedPollClient(AsyncKernelClient):
    """nbclient's asynchronous kernel client with :class:`SlicedPollChannel` on every socket channel."""

    shell_channel_class = Type(SlicedPollChannel)  # type: ignore[assignment]
    iopub_channel_class = Type(SlicedPollChannel)  # type: ignore[assignment]
    stdin_channel_class = Type(SlicedPollChannel)  # type: ignore[assignment]
    control_channel_class = Type(SlicedPollChannel)  # type: ignore[assignment]


class SlicedPollKernelManager(AsyncKernelManager):
    """nbclient's kernel manager, handing out :class:`SlicedPollClient` clients."""

    client_class = DottedObjectName(f"{__name__}.SlicedPollClient")
    client_factory = Type(SlicedPollClient)


@functools.cache
def engine_class() -> type:
    """``SlicedPollEngine``: papermill's nbclient engine on :class:`SlicedPollKernelManager`. Built on
    first use because papermill imports this module while it loads its engines (the entry point), so
    this module must not import papermill when it is imported."""
    from papermill.engines import NBClientEngine

    class SlicedPollEngine(NBClientEngine):
        """Papermill's nbclient engine on :class:`SlicedPollKernelManager` (module docstring)."""

        @classmethod
        def execute_managed_notebook(cls, nb_man: Any, kernel_name: str, **kwargs: Any) -> Any:
            reads.disable()  # this process only runs the notebook: its kernel records the stage's reads
            return super().execute_managed_notebook(nb_man, kernel_name,
                                                    kernel_manager_class=SlicedPollKernelManager, **kwargs)

    SlicedPollEngine.__module__ = __name__
    return SlicedPollEngine


def __getattr__(name: str) -> Any:
    """``SlicedPollEngine`` (the entry point's object) is :func:`engine_class`."""
    if name == "SlicedPollEngine":
        return engine_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
