"""Adapters for inference servers, and a small reference engine.

The agent uses one protocol, :class:`EngineClient`, whatever runs next to it::

    from deltaroll.engines import engine_client

    engine = engine_client("vllm", "http://127.0.0.1:8000")   # or "sglang", "reference"
    engine.reload(Path("/weights/current"), version=version_id)  # raises EngineReloadError
    engine.health(); engine.loaded_version()

Modules: ``client`` (the protocol and factory), ``sglang`` and ``vllm`` (the adapters, with the
engines' request shapes in their docstrings), ``reference`` (the server the sandbox and tests run,
and its client), ``weights_identity`` (digests and version id of in-memory tensors; it takes
whatever torch the process already has, so code that runs in an inference engine's own process
installs with ``deltaroll[engine-extension]`` and no torch requirement of its own),
``live_patch`` (scatters a verified delta into an engine's live tensors in memory, checked
against its change digests, undone if a write fails; shared by the reference engine and the
engine extension), ``extension`` (what runs inside vLLM's workers and SGLang's schedulers:
placing checkpoint tensors in fused, sharded parameters and patching every rank in step),
``rank_answers`` (the vLLM and SGLang adapters' one answer from their ranks' answers),
``transport`` (JSON over HTTP), ``errors``, and what serves an inference pod's port in front of
vLLM or SGLang bound to loopback: ``inference_routes`` (the routes a client may reach) and
``proxy`` (``deltaroll engine proxy``).
"""

from deltaroll.engines.client import (
    DEFAULT_RELOAD_TIMEOUT_S,
    ENGINE_KINDS,
    EngineClient,
    LivePatchingEngine,
    engine_client,
)
from deltaroll.engines.errors import (
    EngineConfigError,
    EngineError,
    EngineReloadError,
    EngineUnreachableError,
    LayoutChangeError,
    LivePatchError,
    ModelLoadError,
)

__all__ = [
    "DEFAULT_RELOAD_TIMEOUT_S",
    "ENGINE_KINDS",
    "EngineClient",
    "EngineConfigError",
    "EngineError",
    "EngineReloadError",
    "EngineUnreachableError",
    "LayoutChangeError",
    "LivePatchError",
    "LivePatchingEngine",
    "ModelLoadError",
    "engine_client",
]
