"""The agent's settings, from ``deltaroll agent run`` flags and the pod's environment."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from deltaroll.api.peers import AUDIENCE as PEER_AUDIENCE
from deltaroll.api.peers import DEFAULT_PEER_PORT, DEFAULT_SEEDERS
from deltaroll.engines.transport import is_loopback

DEFAULT_SCRUB_RATE = 64 << 20  # 64 MiB/s: a 140 GB model every ~37 minutes, a few % of a core
DEFAULT_PEER_SERVE_RATE = 128 << 20  # 128 MiB/s: about 1 Gbit/s of the pod's NIC at most
SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")


class AgentConfig(BaseModel):
    """Everything one agent needs to know; validated once at start."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    store: str = Field(description="store URI (file://, s3://, hf://buckets/...)")
    model: str = Field(min_length=1, description="model name in the store")
    annotations_file: Path = Field(description="downwardAPI file of the pod's annotations")
    weights_dir: Path = Field(description="the checkpoint directory the engine loads")
    engine: str = Field(description="engine kind: reference, sglang or vllm")
    engine_url: str = Field(
        description="the engine's private (loopback) admin URL, e.g. http://127.0.0.1:8001"
    )
    pod_name: str = Field(min_length=1)
    pod_namespace: str = Field(min_length=1)
    cache_dir: Path | None = Field(None, description="object cache; default beside the weights")
    node_cache_url: str | None = Field(
        None,
        pattern=r"^https?://[^/?#]+$",
        description="the node cache daemon (http://<status.hostIP>:<hostPort>): each object is "
        "downloaded once per node; none: every agent downloads its own",
    )
    node_cache_token: Path | None = Field(
        None,
        description="the pod-bound ServiceAccount token for the node cache's audience "
        "(a projected volume); required with node_cache_url",
    )
    node_cache_wait_s: float = Field(
        60.0, gt=0, le=600, description="longest wait for another agent's fill of an object"
    )
    service_account_dir: Path = Field(
        SERVICE_ACCOUNT_DIR,
        description="projected ServiceAccount token volume (token, ca.crt), mounted in the agent "
        "container only",
    )
    health_host: str = "127.0.0.1"  # inside the pod only: the startup probe is an exec probe
    health_port: int = Field(8081, ge=0, le=65535)
    poll_interval_s: float = Field(1.0, gt=0, description="how often the annotations are read")
    retry_initial_s: float = Field(1.0, gt=0, description="first back-off after a failure")
    retry_max_s: float = Field(30.0, gt=0, description="longest back-off")
    failed_retry_s: float = Field(
        300.0, gt=0, description="how long a Failed version waits before it is tried again"
    )
    engine_check_s: float = Field(
        15.0, gt=0, description="how often a Ready agent checks the engine still holds it"
    )
    engine_timeout_s: float = Field(900.0, gt=0, description="longest wait for one reload")
    scrub_rate: int = Field(
        DEFAULT_SCRUB_RATE, ge=0, description="bytes/s the background scrub re-hashes; 0: none"
    )
    scrub_interval_s: float = Field(
        60.0, ge=0, description="rest between the end of one scrub pass and the next"
    )
    verify_keys: list[Path] = Field(
        default_factory=list,
        description="publisher public keys (PEM files, or directories of *.pem) a version must "
        "be signed by; with none here or on the pod, versions are not checked",
    )
    allow_aux_files: list[str] = Field(
        default_factory=list,
        description="glob patterns of files beside the weights allowed beyond the data files",
    )
    allow_auto_map: bool = Field(False, description="allow an auto_map in config files")
    peer_selector: str | None = Field(
        None,
        min_length=1,
        description="label selector of the pods of this pod's ModelDeployment (e.g. app=llm): "
        "serve them verified objects and fetch from them; None: the store only",
    )
    peer_token: Path | None = Field(
        None,
        description="the pod-bound ServiceAccount token for the peers' audience (a projected "
        "volume), shown to every peer asked; required with peer_selector",
    )
    # peers reach it on the pod network; tokens, the NetworkPolicy and the bounds below limit it
    peer_host: str = Field("0.0.0.0", description="address the peer server listens on")  # noqa: S104
    peer_port: int = Field(DEFAULT_PEER_PORT, ge=0, le=65535)
    peer_seeders: int = Field(
        DEFAULT_SEEDERS, ge=1, description="agents that fetch each object from the store"
    )
    peer_serve_rate: int = Field(
        DEFAULT_PEER_SERVE_RATE,
        ge=0,
        description="bytes/s served to all peers together; 0: no limit",
    )
    peer_serve_max: int = Field(4, ge=1, description="peers served at once (others get 503)")
    peer_wait_s: float = Field(
        30.0, ge=0, description="how long an object is awaited from peers before the store"
    )
    seeder_grace_s: float = Field(
        10.0,
        ge=0,
        description="how long a pod waits for its node's seeder to fill the node cache before "
        "it asks that seeder and the other peers itself",
    )
    standby_grace_s: float = Field(
        5.0,
        ge=0,
        description="how long a standby seeder waits for the first seeder's copy of an object "
        "before it fetches the object from the store too (at once when the first is gone)",
    )
    peer_timeout_s: float = Field(
        10.0, gt=0, description="a peer silent this long is skipped (slow or gone)"
    )

    @model_validator(mode="after")
    def _node_cache_has_a_token(self) -> AgentConfig:
        if self.node_cache_url and self.node_cache_token is None:
            raise ValueError(
                "node_cache_token: a node cache needs the pod's token for its audience "
                "(a projected serviceAccountToken with audience deltaroll-node-cache)"
            )
        return self

    @model_validator(mode="after")
    def _peers_have_a_token(self) -> AgentConfig:
        if self.peer_selector is not None and self.peer_token is None:
            raise ValueError(
                f"peer_token: peers serve only pods that show a token for the {PEER_AUDIENCE} "
                f"audience (a projected serviceAccountToken with audience {PEER_AUDIENCE})"
            )
        return self

    @field_validator("engine_url")
    @classmethod
    def _engine_in_this_pod(cls, url: str) -> str:
        """The agent trusts what the engine reports only over the pod's private path."""
        if not is_loopback(url):
            raise ValueError(
                f"{url} is not a loopback address: the agent reloads the engine through its "
                "admin routes, which stay inside the pod; use http://127.0.0.1:<admin port>"
            )
        return url
