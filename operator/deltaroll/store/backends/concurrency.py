"""Many transfers in flight: a bounded thread pool shared by the file and S3 backends.

obstore and file I/O release the GIL, so threads give real parallelism for transfers."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
DEFAULT_WORKERS = 16


def run_all(
    function: Callable[[T], None], items: Sequence[T], *, workers: int = DEFAULT_WORKERS
) -> None:
    """Run ``function`` over ``items`` concurrently, let every item finish, then re-raise the
    first error. Finishing the others keeps their progress (e.g. verified downloads) for a
    retry or a resumed run."""
    if len(items) <= 1:
        for item in items:
            function(item)
        return
    with ThreadPoolExecutor(max_workers=min(workers, len(items))) as pool:
        futures = [pool.submit(function, item) for item in items]
    for future in futures:
        error = future.exception()
        if error is not None:
            raise error
