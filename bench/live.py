"""Shared by the benchmarks: the app on a live uvicorn server, and timed GET requests."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import uvicorn


@contextlib.contextmanager
def live_server(app: Any) -> Iterator[str]:
    """Serve ``app`` on a free loopback port; yields its base URL."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join()


def timed_gets(
    base_url: str,
    token: str,
    request: Callable[[int], tuple[str, dict[str, Any]]],
    count: int,
    warm_up: int,
    check: Callable[[httpx.Response], None] = lambda _answer: None,
) -> list[float]:
    """Seconds per request for ``count`` requests after ``warm_up`` untimed ones; ``request``
    gives the path and query of request number n."""
    latencies = []
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=base_url, headers=headers) as client:
        for number in range(count + warm_up):
            path, params = request(number)
            started = time.perf_counter()
            answer = client.get(path, params=params)
            elapsed = time.perf_counter() - started
            answer.raise_for_status()
            check(answer)
            if number >= warm_up:
                latencies.append(elapsed)
    return latencies
