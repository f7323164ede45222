"""Retry with exponential back-off, and waiting for an MLflow tracking server to answer."""

from __future__ import annotations

import time
from typing import Callable, TypeVar

from amopo.registry import RegistryError

T = TypeVar("T")


def with_backoff(fn: Callable[[], T], *, what: str, attempts: int = 5, first_delay_s: float = 1.0,
                 max_delay_s: float = 15.0, retry_on: tuple[type[BaseException], ...] = (Exception,)) -> T:
    """Call ``fn`` until it returns, sleeping first_delay_s, 2×, 4×… (capped) between tries.

    After ``attempts`` failures raises RegistryError naming ``what``, the attempts, the time spent
    and the last error. Exceptions outside ``retry_on`` propagate at once.
    """
    start = time.monotonic()
    delay = first_delay_s
    for attempt in range(1, max(1, attempts) + 1):
        try:
            return fn()
        except retry_on as exc:
            last = exc
            if attempt >= attempts:
                break
            time.sleep(delay)
            delay = min(delay * 2, max_delay_s)
    elapsed = time.monotonic() - start
    raise RegistryError(f"{what}: failed after {attempts} attempt(s) over {elapsed:.1f}s "
                        f"({type(last).__name__}: {_short(last)})") from None


def _short(exc: BaseException, limit: int = 200) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def wait_until_reachable(tracking_uri: str, *, attempts: int = 5, first_delay_s: float = 1.0,
                         timeout_s: float = 5.0) -> None:
    """For an http(s) tracking URI, retry ``GET /health`` until it answers 200; other URIs return at once."""
    if not tracking_uri.startswith(("http://", "https://")):
        return
    import requests

    url = tracking_uri.rstrip("/") + "/health"

    def probe() -> None:
        response = requests.get(url, timeout=timeout_s)
        if response.status_code != 200:
            raise ConnectionError(f"GET {url} answered HTTP {response.status_code}")

    with_backoff(probe, what=f"cannot reach the MLflow server at {tracking_uri}", attempts=attempts,
                 first_delay_s=first_delay_s, retry_on=(requests.RequestException, ConnectionError))
