"""Where units of work run: in this process, in threads, or (``ray_executor``) on Ray.

An executor only decides placement. It runs ``work(context, state, item)`` for each item after
building the per-worker ``state`` once with ``setup(context)``, and yields
``(item, result, error)`` as items finish; what an error means is the runner's business.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from typing import Any, Protocol

from hybrid.execution.context import Context, WorkResult

Work = Callable[[Context, dict, str], WorkResult]
Setup = Callable[[Context], dict]


class Executor(Protocol):
    """Runs ``work`` for each item and yields ``(item, result, error)`` as items finish.

    ``role`` says what a unit needs, in words an executor turns into a reservation:
    "encoder" (the LSTM: a GPU when there is one) or "worker" (a decoder or baseline: CPUs).
    """

    def map(self, work: Work, setup: Setup | None, context: Context, items: list[str],
            role: str) -> Iterator[tuple[str, Any, BaseException | None]]: ...

    def call(self, fn: Callable[[Context], Any], context: Context,
             role: str) -> tuple[Any, dict]: ...

    def close(self) -> None: ...


class SerialExecutor:
    """In this process, one item after another (tests, debugging, a single core)."""

    def map(self, work, setup, context, items, role):
        state = {"node_id": "local", **(setup(context) if setup else {})}
        for item in items:
            try:
                yield item, work(context, state, item), None
            except Exception as err:  # noqa: BLE001 - the runner's failure policy decides
                yield item, None, err

    def call(self, fn, context, role):
        return fn(context), {"node_id": "local"}

    def close(self) -> None:
        pass


class ThreadExecutor(SerialExecutor):
    """Threads in this process, for work that waits on files (``prepare`` reading a dataset).

    ``state``, when given, is used as every thread's shared state instead of calling
    ``setup`` (the driver's already-open dataset, say).
    """

    def __init__(self, threads: int, state: dict | None = None) -> None:
        self.threads = max(1, threads)
        self.state = state

    def map(self, work, setup, context, items, role):
        if self.state is not None:
            state = {"node_id": "local", **self.state}
        else:
            state = {"node_id": "local", **(setup(context) if setup else {})}
        items = iter(items)
        with ThreadPoolExecutor(self.threads) as pool:
            pending = {}
            while True:
                while len(pending) < 2 * self.threads:
                    item = next(items, None)
                    if item is None:
                        break
                    pending[pool.submit(work, context, state, item)] = item
                if not pending:
                    return
                finished, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in finished:
                    item = pending.pop(future)
                    error = future.exception()
                    yield item, (None if error else future.result()), error
