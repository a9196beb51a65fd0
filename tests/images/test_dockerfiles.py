"""The Dockerfiles cannot be built here (no container engine), so they are checked by reading
them: every COPY source exists in the repository, every image runs as a non-root user, every
`deltaroll` command they run is a real subcommand (`deltaroll <sub> --help` exits 0), and each
installs only its own set of dependencies (its extra of pyproject.toml; torch only where that
extra needs it)."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import tomllib
from pathlib import Path

import pytest

from fixtures.cli import DELTAROLL

REPO = Path(__file__).resolve().parents[2]
IMAGES = REPO / "images"
DOCKERFILES = sorted(p for p in IMAGES.glob("Dockerfile.*") if p.suffix != ".dockerignore")


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with continuation lines joined and comments dropped."""
    result: list[tuple[str, str]] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line, pending = pending + line, ""
        keyword, _, rest = line.partition(" ")
        result.append((keyword.upper(), rest.strip()))
    return result


def words(arguments: str) -> list[str]:
    """Exec form (a JSON array) or shell form."""
    return json.loads(arguments) if arguments.startswith("[") else shlex.split(arguments)


def test_there_are_three_images() -> None:
    assert [p.name for p in DOCKERFILES] == [
        "Dockerfile.agent",
        "Dockerfile.operator",
        "Dockerfile.worker",
    ]


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_copy_sources_exist(dockerfile: Path) -> None:
    copied = 0
    for keyword, arguments in instructions(dockerfile):
        if keyword not in {"COPY", "ADD"}:
            continue
        parts = [w for w in words(arguments) if not w.startswith("--")]
        if any(w.startswith("--from=") for w in words(arguments)):
            continue  # from another build stage, not from the repository
        for source in parts[:-1]:
            assert (REPO / source).exists(), f"{dockerfile.name}: COPY {source} does not exist"
            copied += 1
    assert copied, f"{dockerfile.name} copies nothing from the repository"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_runs_as_non_root(dockerfile: Path) -> None:
    users = [arguments for keyword, arguments in instructions(dockerfile) if keyword == "USER"]
    assert users, f"{dockerfile.name} has no USER"
    user = users[-1].split(":")[0]
    assert user not in {"0", "root"}, f"{dockerfile.name} runs as root"
    assert user.isdigit(), "a numeric USER lets runAsNonRoot verify it without /etc/passwd"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_entry_point_is_deltaroll(dockerfile: Path) -> None:
    steps = dict(instructions(dockerfile))
    assert words(steps["ENTRYPOINT"]) == ["deltaroll"]


def test_worker_has_cuda_and_torch() -> None:
    steps = instructions(IMAGES / "Dockerfile.worker")
    (base,) = [a for k, a in steps if k == "FROM"]
    assert base.startswith("nvidia/cuda:12.") and "runtime" in base
    assert any(k == "RUN" and "torch==2.13.0" in a for k, a in steps)


def _default_command(dockerfile: Path) -> list[str]:
    """The subcommand path the image runs by default (ENTRYPOINT + CMD, options dropped)."""
    steps = dict(instructions(dockerfile))
    command = words(steps["ENTRYPOINT"])[1:] + words(steps["CMD"])
    return [w for w in command if not w.startswith("-")]


def _is_real_subcommand(path: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(DELTAROLL), *path, "--help"], capture_output=True, text=True, check=False
    )


@pytest.mark.parametrize(
    "dockerfile",
    [
        pytest.param(IMAGES / "Dockerfile.operator", id="operator run"),
        pytest.param(IMAGES / "Dockerfile.worker", id="worker"),
        pytest.param(IMAGES / "Dockerfile.agent", id="agent run"),
    ],
)
def test_default_command_is_a_real_subcommand(dockerfile: Path) -> None:
    done = _is_real_subcommand(_default_command(dockerfile))
    assert done.returncode == 0, done.stderr


def test_the_check_itself_tells_real_from_unknown_subcommands() -> None:
    assert _is_real_subcommand(["crds"]).returncode == 0
    assert _is_real_subcommand(["no-such-command"]).returncode != 0


#: The extra each image installs (None: the base distribution alone).
IMAGE_EXTRAS = {
    "Dockerfile.operator": None,
    "Dockerfile.worker": "worker",
    "Dockerfile.agent": "agent",
}


def _installs_of_the_source(dockerfile: Path) -> list[str]:
    """What ``pip install`` installs from the copied repository: ``/src`` or ``/src[extra]``."""
    commands = [c for k, a in instructions(dockerfile) if k == "RUN" for c in a.split("&&")]
    installs = [c for c in commands if "pip install" in c]
    return [w for c in installs for w in words(c) if re.fullmatch(r"/src(\[[\w,-]+\])?", w)]


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_each_image_installs_only_its_own_extra(dockerfile: Path) -> None:
    extra = IMAGE_EXTRAS[dockerfile.name]
    assert _installs_of_the_source(dockerfile) == ["/src" if extra is None else f"/src[{extra}]"]
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    assert extra is None or extra in extras
    wants_torch = extra is not None and any(r.startswith("torch") for r in extras[extra])
    installs_torch = any(k == "RUN" and "torch==" in a for k, a in instructions(dockerfile))
    assert installs_torch == wants_torch, f"{dockerfile.name}: torch only where its extra needs it"


def test_the_operator_image_copies_only_the_product() -> None:
    copies = [a for k, a in instructions(IMAGES / "Dockerfile.operator") if k == "COPY"]
    assert not any("sandbox" in a or "demo" in a for a in copies)
    assert any(words(a)[0] == "operator/deltaroll" for a in copies)


@pytest.mark.parametrize("name", ["Dockerfile.agent", "Dockerfile.worker"])
def test_images_with_kernels_ship_them_compiled_into_the_seed_they_name(name: str) -> None:
    steps = instructions(IMAGES / name)
    env = " ".join(a for k, a in steps if k == "ENV")
    seed = re.search(r"DELTAROLL_NUMBA_CACHE_SEED=(\S+)", env)
    assert seed and "NUMBA_CACHE_DIR=/tmp/" in env
    assert any(
        k == "RUN" and f"NUMBA_CACHE_DIR={seed[1]} " in a and "import deltaroll.codec.kernels" in a
        for k, a in steps
    )
