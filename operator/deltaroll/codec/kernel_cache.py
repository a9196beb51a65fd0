"""Seeding numba's cache directory with kernels compiled when the image was built.

Why: numba uses only a cache directory it can write to, and Jobs and agents run with a
read-only root filesystem, so ``NUMBA_CACHE_DIR`` is an emptyDir under /tmp that starts empty:
each Job compiled the kernels again (~5 s). The images compile them at build time into
``DELTAROLL_NUMBA_CACHE_SEED`` and the first process copies that into the empty cache
directory. numba then loads a kernel from it only where its index matches: the same
``kernels.py`` at the same path (the same image), the same numba and Python, and the CPU name
and features of the build machine; otherwise it compiles, as before, and caches its own.
"""

from __future__ import annotations

import os
import shutil
import tempfile

SEED_ENV = "DELTAROLL_NUMBA_CACHE_SEED"


def seed_numba_cache() -> None:
    """Copy the seed into ``NUMBA_CACHE_DIR`` unless that exists already (or either is unset);
    concurrent processes race safely (a copy beside it, renamed into place)."""
    seed, cache = os.environ.get(SEED_ENV), os.environ.get("NUMBA_CACHE_DIR")
    if not seed or not cache or not os.path.isdir(seed) or os.path.exists(cache):
        return
    parent = os.path.dirname(os.path.abspath(cache))
    try:
        os.makedirs(parent, exist_ok=True)
        staging = tempfile.mkdtemp(prefix=".numba-seed-", dir=parent)
    except OSError:
        return  # numba finds no usable cache there either, and compiles in memory
    try:
        shutil.copytree(seed, staging, dirs_exist_ok=True)
        os.rename(staging, cache)
    except OSError:  # another process seeded it first, or no room: numba copes either way
        shutil.rmtree(staging, ignore_errors=True)
