"""The runtime seam's own promises, on both backends."""

from __future__ import annotations

from typing import Any

from conftest import Backend


def test_call_soon_runs_after_the_task_yields_in_order(backend: Backend) -> None:
    async def main(net: Any) -> tuple[list[str], float]:
        rt = net.runtime("a")
        log: list[str] = []
        start = rt.now()
        rt.call_soon(lambda: log.append("first"))
        dropped = rt.call_soon(lambda: log.append("cancelled"))
        rt.call_soon(lambda: log.append("second"))
        dropped.cancel()
        log.append("task goes on")
        await rt.sleep(0)
        await rt.sleep(0.001)
        return log, rt.now() - start

    log, took = backend.run(main)
    assert log == ["task goes on", "first", "second"]
    if backend.simulated:
        assert took == 0.001
