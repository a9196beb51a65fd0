"""The numba cache seed: copied into an empty cache directory, never over an existing one."""

from __future__ import annotations

from pathlib import Path

import pytest

from deltaroll.codec.kernel_cache import SEED_ENV, seed_numba_cache


def test_the_seed_fills_a_missing_cache_directory_and_no_other(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seed = tmp_path / "seed" / "codec_abc"
    seed.mkdir(parents=True)
    (seed / "kernels.emit_changed-1.py312.nbi").write_bytes(b"index")
    cache = tmp_path / "run" / "numba-cache"
    monkeypatch.setenv(SEED_ENV, str(tmp_path / "seed"))
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(cache))
    seed_numba_cache()
    assert (cache / "codec_abc" / "kernels.emit_changed-1.py312.nbi").read_bytes() == b"index"
    assert [p.name for p in cache.parent.iterdir()] == ["numba-cache"]  # no staging left

    (cache / "codec_abc" / "kernels.emit_changed-1.py312.nbi").write_bytes(b"compiled here")
    seed_numba_cache()  # the cache exists: what numba wrote there stays
    assert (cache / "codec_abc" / "kernels.emit_changed-1.py312.nbi").read_bytes() == (
        b"compiled here"
    )


def test_no_seed_or_no_cache_directory_is_a_no_op(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(SEED_ENV, str(tmp_path / "missing"))
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path / "cache"))
    seed_numba_cache()
    monkeypatch.delenv("NUMBA_CACHE_DIR")
    monkeypatch.setenv(SEED_ENV, str(tmp_path))
    seed_numba_cache()
    assert not (tmp_path / "cache").exists()
