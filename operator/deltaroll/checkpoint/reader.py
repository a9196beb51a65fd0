"""Finding a checkpoint's files and streaming its tensors one at a time.

A checkpoint is either a single ``.safetensors`` file or a directory in Hugging Face layout: one
``model.safetensors`` or shards listed in ``model.safetensors.index.json``, plus auxiliary files
(config, tokenizer, ...). Every other visible regular file at the top of the directory is an
auxiliary file; hidden files (``.deltaroll-journal`` and temp files) and sub-directories are not
part of the checkpoint. Tensor bytes are read at their offsets, one tensor at a time, so memory
stays near the largest tensor rather than the model.
"""

from __future__ import annotations

import errno
import json
import mmap
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from deltaroll.checkpoint.dtypes import bits_view
from deltaroll.checkpoint.errors import InvalidCheckpointError, UnsafeNameError
from deltaroll.checkpoint.header import SafetensorsHeader, TensorInfo, read_header
from deltaroll.checkpoint.names import check_file_name

# madvise(2) advice that faults a range in now, failing (EFAULT) where a read would raise SIGBUS
# (Linux 5.14; Python's mmap module names it from 3.13 on).
MADV_POPULATE_READ = getattr(mmap, "MADV_POPULATE_READ", 22)
INDEX_NAME = "model.safetensors.index.json"
SINGLE_NAME = "model.safetensors"


@dataclass(frozen=True)
class WeightFile:
    """One safetensors file of a checkpoint and its validated header."""

    name: str
    path: Path
    header: SafetensorsHeader


@dataclass(frozen=True)
class TensorRef(TensorInfo):
    """A header's tensor entry plus the weight file it lives in: ``begin``/``end`` are absolute
    offsets in ``path`` (``file`` is its name inside the checkpoint)."""

    file: str
    path: Path


@dataclass(frozen=True)
class Checkpoint:
    """An opened checkpoint: its weight files, auxiliary files and tensors (in file order)."""

    path: Path
    kind: Literal["file", "directory"]
    weight_files: tuple[WeightFile, ...]
    aux_files: dict[str, Path]
    tensors: dict[str, TensorRef]

    @property
    def directory(self) -> Path:
        """The directory holding the weight files (the parent of a single-file checkpoint)."""
        return self.path if self.kind == "directory" else self.path.parent

    @property
    def total_bytes(self) -> int:
        """Bytes on disk of every weight and auxiliary file."""
        weights = sum(w.header.file_size for w in self.weight_files)
        return weights + sum(p.stat().st_size for p in self.aux_files.values())

    @property
    def tensor_bytes(self) -> int:
        return sum(t.nbytes for t in self.tensors.values())

    def read_bits(self, name: str) -> np.ndarray:
        """The raw bits of tensor ``name`` as a flat, writable array of unsigned integers."""
        return read_tensor_bits(self.tensors[name])


def read_tensor_bits(ref: TensorRef) -> np.ndarray:
    """Read one tensor's bytes at its offset; fails if the file changed under us."""
    try:
        bits = np.fromfile(ref.path, dtype=bits_view(ref.dtype), count=ref.numel, offset=ref.begin)
    except OSError as exc:
        raise InvalidCheckpointError(f"cannot read {ref.path}: {exc.strerror or exc}") from exc
    if bits.size != ref.numel:
        raise InvalidCheckpointError(
            f"{ref.path} ended inside tensor {ref.name!r}: the file was truncated while reading"
        )
    return bits


class TensorFile:
    """One tensor's file, held open to read windows of the tensor into the caller's buffers.

    Why not ``np.fromfile`` per window: each fresh array is new anonymous memory, so the kernel
    zero-fills and maps every page of it before copying the file's bytes in (page faults were a
    third of diff's system time), and the file was opened and closed per window. Reads use
    ``preadv`` at the window's offset (no shared file position, so threads may read) and the
    file is advised sequential (a larger readahead for the cold read). Use as a context manager.
    """

    def __init__(self, ref: TensorRef) -> None:
        self.ref = ref
        self.dtype = np.dtype(bits_view(ref.dtype))
        try:
            self._fd = os.open(ref.path, os.O_RDONLY)
        except OSError as exc:
            raise InvalidCheckpointError(f"cannot read {ref.path}: {exc.strerror or exc}") from exc
        os.posix_fadvise(self._fd, ref.begin, ref.nbytes, os.POSIX_FADV_SEQUENTIAL)

    def __enter__(self) -> TensorFile:
        return self

    def __exit__(self, *exc_info: object) -> None:
        os.close(self._fd)

    def will_need(self, start: int, count: int) -> None:
        """Ask the kernel to start reading elements ``[start, start + count)`` now, in the
        background (clamped to the tensor), so the disk keeps streaming while we compute."""
        count = min(count, self.ref.numel - start)
        if count > 0:
            offset = self.ref.begin + start * self.dtype.itemsize
            os.posix_fadvise(self._fd, offset, count * self.dtype.itemsize, os.POSIX_FADV_WILLNEED)

    def map_window(self, start: int, count: int) -> np.ndarray:
        """Elements ``[start, start + count)`` as a read-only array over the page cache.

        Why: :meth:`read_into` copies every byte out of the page cache (a fifth of a diff's
        CPU); a mapping costs page-table entries only. The window is faulted in here, so a file
        truncated under us raises :class:`InvalidCheckpointError` rather than SIGBUS on access
        (on kernels without MADV_POPULATE_READ the pages fault in on first access instead). The
        mapping is released with the last array over it.
        """
        offset = self.ref.begin + start * self.dtype.itemsize
        aligned = offset - offset % mmap.ALLOCATIONGRANULARITY
        length = offset - aligned + count * self.dtype.itemsize
        try:
            window = mmap.mmap(self._fd, length, prot=mmap.PROT_READ, offset=aligned)
            window.madvise(MADV_POPULATE_READ)
        except ValueError:  # mmap: the range lies past the file's end
            raise self._truncated() from None
        except OSError as exc:
            if exc.errno == errno.EFAULT:
                raise self._truncated() from None
            if exc.errno != errno.EINVAL:  # EINVAL: an older kernel; faulted in on access
                raise InvalidCheckpointError(
                    f"cannot read {self.ref.path}: {exc.strerror or exc}"
                ) from exc
        return np.frombuffer(window, self.dtype, count, offset - aligned)

    def _truncated(self) -> InvalidCheckpointError:
        return InvalidCheckpointError(
            f"{self.ref.path} ended inside tensor {self.ref.name!r}: the file was truncated "
            "while reading"
        )

    def read_into(self, start: int, out: np.ndarray) -> None:
        """Fill ``out`` (contiguous, of :attr:`dtype`) with elements from ``start`` on."""
        view = out.reshape(-1).view(np.uint8).data
        offset = self.ref.begin + start * self.dtype.itemsize
        done = 0
        while done < view.nbytes:
            try:
                got = os.preadv(self._fd, [view[done:]], offset + done)
            except OSError as exc:
                raise InvalidCheckpointError(
                    f"cannot read {self.ref.path}: {exc.strerror or exc}"
                ) from exc
            if got == 0:
                raise self._truncated()
            done += got


def open_checkpoint(path: Path) -> Checkpoint:
    """Open a single safetensors file or a Hugging Face checkpoint directory."""
    path = Path(path)
    if path.is_file():
        weight = WeightFile(path.name, path, read_header(path))
        return Checkpoint(path, "file", (weight,), {}, _tensor_refs((weight,)))
    if not path.is_dir():
        raise InvalidCheckpointError(
            f"{path} does not exist: pass a .safetensors file or a directory"
        )
    weight_names = _weight_file_names(path)
    weights = tuple(WeightFile(n, path / n, read_header(path / n)) for n in weight_names)
    tensors = _tensor_refs(weights)
    if (path / INDEX_NAME).is_file():
        _check_index(path, tensors)
    aux = {
        p.name: p
        for p in sorted(path.iterdir())
        if p.is_file() and not p.name.startswith(".") and p.name not in weight_names
    }
    return Checkpoint(path, "directory", weights, aux, tensors)


def _weight_file_names(directory: Path) -> list[str]:
    index = directory / INDEX_NAME
    if index.is_file():
        shards = sorted(set(_weight_map(index).values()))
        for shard in shards:
            if not (directory / shard).is_file():
                raise InvalidCheckpointError(f"{index} names shard {shard!r}, which is missing")
        return shards
    if (directory / SINGLE_NAME).is_file():
        return [SINGLE_NAME]
    candidates = sorted(
        p.name for p in directory.glob("*.safetensors") if p.is_file() and p.name[0] != "."
    )
    if len(candidates) == 1:
        return candidates
    raise InvalidCheckpointError(
        f"{directory} has no {SINGLE_NAME}, no {INDEX_NAME} and not exactly one .safetensors "
        f"file (found {len(candidates)}): pass a checkpoint directory or a .safetensors file"
    )


def _weight_map(index: Path) -> dict[str, str]:
    try:
        document = json.loads(index.read_bytes())
    except (OSError, ValueError) as exc:
        raise InvalidCheckpointError(f"cannot read {index}: {exc}") from exc
    weight_map = document.get("weight_map") if isinstance(document, dict) else None
    if not isinstance(weight_map, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in weight_map.items()
    ):
        raise InvalidCheckpointError(f"{index} has no weight_map of tensor names to file names")
    for shard in set(weight_map.values()):
        try:
            check_file_name(shard)
        except UnsafeNameError as exc:
            raise InvalidCheckpointError(f"{index}: {exc}") from exc
    return weight_map


def _check_index(directory: Path, tensors: dict[str, TensorRef]) -> None:
    weight_map = _weight_map(directory / INDEX_NAME)
    actual = {name: ref.file for name, ref in tensors.items()}
    if actual != weight_map:
        wrong = sorted(set(actual.items()) ^ set(weight_map.items()))[:3]
        raise InvalidCheckpointError(
            f"{directory / INDEX_NAME} does not match its shards (first differences: {wrong})"
        )


def _tensor_refs(weights: tuple[WeightFile, ...]) -> dict[str, TensorRef]:
    tensors: dict[str, TensorRef] = {}
    for weight in weights:
        for t in weight.header.tensors:
            if t.name in tensors:
                raise InvalidCheckpointError(
                    f"tensor {t.name!r} appears in both {tensors[t.name].file} and {weight.name}"
                )
            tensors[t.name] = TensorRef(
                t.name, t.dtype, t.shape, t.begin, t.end, file=weight.name, path=weight.path
            )
    return tensors
