"""Deltaroll: ship new model weights to inference fleets as sparse, lossless deltas.

Layers, lowest first; imports only point downwards:

- ``codec``       tensors in, delta out, and back (no I/O beyond bytes)
- ``checkpoint``  safetensors checkpoints: streaming reads, in-place patches, checksums
- ``store``       the bucket: objects, version manifests, the version graph, backends
- ``api``         pydantic models of the custom resources; CRDs are generated from them
- ``worker``      entry points of the Kubernetes Jobs
- ``agent``       the sidecar in every inference pod
- ``engines``     adapters for inference servers, and a small reference engine
- ``controllers`` Kopf handlers; the rollout planner is a pure function
- ``sandbox``     a local control plane for tests and the demo
- ``cli``         the ``deltaroll`` and ``kubectl-deltaroll`` commands
"""

__version__ = "0.1.0"
