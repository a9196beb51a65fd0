"""A local control plane (a Kubernetes API and a kubelet) for operator tests without a cluster.

Its own distribution, ``deltaroll-sandbox``, beside Deltaroll rather than in it: Deltaroll's
tests and demo run on it, Kopf's own examples pass on it, and no Deltaroll image ships it.

- :mod:`.apiserver` — a Kubernetes API over HTTPS: kmock's scaffold (discovery, Status errors)
  plus a faithful store (one resourceVersion counter, watches with 410/bookmarks, the three patch
  types, selectors, status subresources, finalizers, garbage collection, CRDs with schema
  pruning/defaulting/validation incl. CEL, ``/openapi/v3``, Tables for ``kubectl get``,
  TokenRequest and TokenReview).
- :mod:`.kubelet` — one per node; runs pods' containers as local processes; how mounts, ports
  and env map onto one machine is documented in that package, what a node is in
  :mod:`.kubelet.node`.
- :mod:`.controllers` — a scheduler (nodeSelector, required node affinity, topology spread
  constraints) and minimal Job, Deployment and DaemonSet controllers.
- :mod:`.testing` — a running sandbox from sync code; :mod:`.pytest_fixtures` — the ``sandbox``
  fixture; :mod:`.polling` — ``wait_for``; :mod:`.cli` — the commands; :mod:`.certs`,
  :mod:`.kubeconfig`, :mod:`.sandbox` (the whole, in a running loop), :mod:`.errors`.

Use it:

- ``deltaroll-sandbox up [--dir DIR] [--port N] [--nodes N]`` (or ``deltaroll sandbox up``
  where Deltaroll is installed) — foreground; prints ``DIR/kubeconfig``;
  ``deltaroll-sandbox logs POD``.
- ``async with Sandbox(directory, nodes=1) as sb:`` — in a running loop; ``sb.kubeconfig_path``,
  ``sb.api_url``, ``sb.api.store`` (the objects, for white-box checks).
- :func:`deltaroll_sandbox.testing.running_sandbox` — the same from sync code (a thread), with
  ``kubectl(...)``, ``api_client()``, ``env()``; :mod:`.pytest_fixtures` has a ``sandbox``
  fixture (``KUBECONFIG`` set) to import into a conftest.py.

Known limits: no images (a container needs a ``command``), no Services/networking beyond
loopback ports, no admission webhooks or conversion webhooks, protobuf bodies only for
Namespaces, ConfigMaps and Secrets (``kubectl create job|deployment`` → use ``kubectl apply``),
lists are never paginated, and Deployments own their pods directly (no ReplicaSets).
"""

from deltaroll_sandbox.sandbox import Sandbox

__all__ = ["Sandbox"]
