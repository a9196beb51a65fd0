"""Deltaroll: ship new model weights to inference fleets as sparse, lossless deltas.

Parts, lowest layer first; a part imports only the parts above it in this list (and the
top-level ``errors``, ``logs`` and ``redact``), never one below, and no two parts import each
other (tests/test_layers.py checks every import, lazy ones included):

- ``api``         the contracts: the custom resources' pydantic models (CRDs are generated from
                  them) and every shape that crosses a process boundary (annotations, the agent's
                  state, a Job's result, a version's facts)
- ``codec``       tensors in, delta out, and back (no I/O beyond bytes)
- ``checkpoint``  safetensors checkpoints: streaming reads, in-place patches, checksums
- ``store``       the bucket: objects, version manifests, the version graph, backends
- ``worker``      entry points of the Kubernetes Jobs
- ``engines``     adapters for inference servers, and a small reference engine
- ``agent``       the sidecar in every inference pod (it drives an engine through ``engines``)
- ``controllers`` Kopf handlers, one folder per custom resource; the planners are pure functions
- ``cli``         the ``deltaroll`` and ``kubectl-deltaroll`` commands

Which image ships which part (each installs this distribution with its own extra, see
pyproject.toml):

- operator image (``deltaroll``, no extra; no torch, no numba): ``api``, ``codec``,
  ``checkpoint``, ``store`` (to read manifests), ``controllers``, ``cli``
- worker image (``deltaroll[worker]``: + torch, numba): ``worker`` and the layers beneath it
- agent image (``deltaroll[agent]``: + numba): ``agent``, ``engines`` (the adapters)
- the reference engine (``deltaroll[engine]``: + torch, transformers): ``engines.reference``,
  which the sandbox, the tests and the demo run; no image ships it

Not shipped, distributions of their own beside this one (``make setup`` installs them):

- ``deltaroll_sandbox`` (operator/sandbox) a local Kubernetes API and kubelet for tests and the
  demo; it adds ``deltaroll sandbox`` through the ``deltaroll.cli`` entry points
- ``deltaroll_demo`` (operator/demo) ``make demo``, and the small-model trainer of the tests and
  benchmarks
"""

__version__ = "0.1.0"
