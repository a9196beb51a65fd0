"""Fixtures of the controller tests: trained checkpoints, and for e2e a sandbox with the CRDs,
a file:// store holding step-0, and the real operator (``deltaroll operator run``) as a process
that a test can kill and start again."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from controllers.modeldelta_world import TEAM_B_KEYS, Gate, Operator, create_secret, wait_for
from deltaroll.api.agent_access import agent_access_objects
from deltaroll.store import Store
from deltaroll_sandbox.pytest_fixtures import sandbox  # noqa: F401 - the fixture itself
from deltaroll_sandbox.testing import RunningSandbox
from fixtures.checkpoints import train_checkpoints
from fixtures.s3 import moto_server

REPO = Path(__file__).resolve().parents[2]
RESTRICTED_LABELS = (
    "pod-security.kubernetes.io/enforce=restricted",
    "pod-security.kubernetes.io/enforce-version=latest",
)

# test_e2e_rollout.py imports these from here; they live in modeldelta_world.py.
__all__ = ["Operator", "wait_for"]


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """step-0 .. step-2, single-file layout."""
    return train_checkpoints(tmp_path_factory.mktemp("ctl-ckpt"), steps=2, hidden=64)


@pytest.fixture(scope="session")
def trained_sharded(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """step-0 .. step-1 in two shards plus an index."""
    return train_checkpoints(
        tmp_path_factory.mktemp("ctl-sharded"), steps=1, hidden=64, layout="sharded"
    )


@pytest.fixture
def cluster(sandbox: RunningSandbox) -> RunningSandbox:  # noqa: F811
    """A sandbox with the Deltaroll CRDs and the agent's identity (ServiceAccount, Role, the
    own-pod admission policy) installed, as a user installs them, and the tests' namespace held
    to Pod Security "restricted", as an admin would hold it: every pod the operator creates
    there (worker and analysis Jobs) must pass it, or the tests fail."""
    sandbox.kubectl("apply", "-f", str(REPO / "crds"))
    sandbox.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(agent_access_objects("default")))
    sandbox.kubectl("label", "namespace", "default", *RESTRICTED_LABELS)
    return sandbox


@pytest.fixture
def operator(cluster: RunningSandbox, tmp_path: Path) -> Iterator[Operator]:
    running = Operator(cluster, tmp_path / "operator.log")
    running.start()
    yield running
    running.stop()


@pytest.fixture
def silent_endpoint() -> Iterator[str]:
    """An HTTP endpoint that accepts connections and never answers: a worker reading from it
    hangs until killed (how a test catches a worker mid-way, deterministically)."""
    import socket
    import threading

    server = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except TimeoutError:
                continue
            except OSError:
                return

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}"
    stop.set()
    thread.join(timeout=5)
    for connection in held:
        connection.close()
    server.close()


@pytest.fixture
def hanging_s3_secret(cluster: RunningSandbox, silent_endpoint: str) -> str:
    """The name of a store credentials Secret whose endpoint is :func:`silent_endpoint`."""
    create_secret(
        cluster,
        "hanging-s3",
        {
            "AWS_ENDPOINT_URL": silent_endpoint,
            "AWS_ALLOW_HTTP": "true",
            "AWS_REGION": "us-east-1",
            "AWS_ACCESS_KEY_ID": "test",
            "AWS_SECRET_ACCESS_KEY": "test-secret",
        },
    )
    return "hanging-s3"


@pytest.fixture
def gated_s3(tmp_path: Path) -> Iterator[tuple[Any, Gate]]:
    """A moto S3 server reached through a :class:`Gate`; (boto3 client, gate)."""
    import boto3

    with moto_server() as endpoint:
        gate = Gate(endpoint)
        client = boto3.client(
            "s3",
            endpoint_url=endpoint,
            region_name="us-east-1",
            aws_access_key_id="test",
            aws_secret_access_key="test-secret",
        )
        yield client, gate
        gate.close()


STORE_SECRET = "store-creds-SECRET-5c2e8a-never-print"


@pytest.fixture
def credentialed_s3_store(
    cluster: RunningSandbox, trained: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[str, dict[str, str]]]:
    """An s3:// store on moto holding step-0 and step-1, reachable only with the credentials of
    the Secret ``store-creds`` (the operator's environment points nowhere)."""
    import uuid

    import boto3

    from fixtures.ports import free_port
    from fixtures.s3 import moto_server

    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")  # a dead one
    with moto_server() as endpoint:
        credentials = {
            "AWS_ENDPOINT_URL": endpoint,
            "AWS_ALLOW_HTTP": "true",
            "AWS_REGION": "us-east-1",
            "AWS_ACCESS_KEY_ID": "store-creds-key",
            "AWS_SECRET_ACCESS_KEY": STORE_SECRET,
        }
        bucket = f"models-{uuid.uuid4().hex[:12]}"  # moto's state outlives its server
        boto3.client(
            "s3",
            endpoint_url=endpoint,
            region_name="us-east-1",
            aws_access_key_id="store-creds-key",
            aws_secret_access_key=STORE_SECRET,
        ).create_bucket(Bucket=bucket)
        uri = f"s3://{bucket}/prod"
        store = Store(uri, credentials=credentials, cache_dir=tmp_path / "s3-cache")
        store.push("tiny", trained[0], name="step-0")
        store.push("tiny", trained[1], base=trained[0], name="step-1")
        create_secret(cluster, "store-creds", credentials)
        yield uri, credentials


@pytest.fixture
def team_b_bucket(trained: list[Path], tmp_path: Path) -> Iterator[tuple[str, Gate]]:
    """Another team's bucket on moto holding step-0, behind a recording proxy; (uri, proxy).
    It refuses anonymous requests, as a private bucket does."""
    import uuid

    import boto3

    with moto_server() as endpoint:
        bucket = f"team-b-{uuid.uuid4().hex[:12]}"
        keys = {"aws_access_key_id": "team-b", "aws_secret_access_key": "team-b-secret"}
        boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", **keys).create_bucket(
            Bucket=bucket
        )
        uri = f"s3://{bucket}/models"
        credentials = {**TEAM_B_KEYS, "AWS_ENDPOINT_URL": endpoint}
        Store(uri, credentials=credentials, cache_dir=tmp_path / "b").push(
            "tiny", trained[0], name="step-0"
        )
        gate = Gate(endpoint, opened=True)
        yield uri, gate
        gate.close()
