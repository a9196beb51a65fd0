"""Fixtures of the agent tests: real checkpoints in a real store, a real engine, a real API.

- ``llama``: a tiny Llama really trained with AdamW (the engines' fixture, loadable by the
  reference engine): v1, v2 = v1 plus one step, v3 = v2 plus one step with a huge learning rate.
- ``published``: a ``file://`` store where v1 is an anchor, v2 a delta from v1 and v3 a delta
  from v2 (tests that damage a store take a copy with :func:`copy_store`).
- ``api_sandbox``: the sandbox's Kubernetes API without its kubelet, for in-process agents.
- ``engine``: ``deltaroll engine serve`` as a subprocess, serving v1 from its own directory.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import kubernetes
import pytest

from agent.helpers import Published, publish_versions
from deltaroll.checkpoint import checkpoint_version
from deltaroll.store import Store
from deltaroll_sandbox.testing import RunningSandbox, running_sandbox
from engines.checkpoints import TinyCheckpoints, build_with_one_thread
from engines.processes import RunningEngine, start_reference_engine


@pytest.fixture(scope="session")
def llama(tmp_path_factory: pytest.TempPathFactory) -> TinyCheckpoints:
    return build_with_one_thread(tmp_path_factory.mktemp("llama"))


@pytest.fixture(scope="session")
def published(llama: TinyCheckpoints, tmp_path_factory: pytest.TempPathFactory) -> Published:
    root = tmp_path_factory.mktemp("published") / "store"
    uri = f"file://{root}"
    publish_versions(Store(uri, cache_dir=root.parent / "push-cache"), llama)
    paths = {"v1": llama.v1, "v2": llama.v2, "v3": llama.diverged}
    ids = {label: checkpoint_version(path) for label, path in paths.items()}
    return Published(uri, root, paths, ids)


@pytest.fixture(scope="session")
def api_sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningSandbox]:
    with running_sandbox(tmp_path_factory.mktemp("api-sandbox"), run_pods=False) as sandbox:
        yield sandbox


@pytest.fixture(scope="session")
def core(api_sandbox: RunningSandbox) -> Iterator[kubernetes.client.CoreV1Api]:
    client = api_sandbox.api_client()
    yield kubernetes.client.CoreV1Api(client)
    client.close()


@pytest.fixture(scope="session")
def engine(
    llama: TinyCheckpoints, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningEngine]:
    served = tmp_path_factory.mktemp("engine") / "v1"
    shutil.copytree(llama.v1, served)
    running = start_reference_engine(served, served.parent / "engine.log")
    yield running
    assert running.stop() == 0, running.log.read_text()
