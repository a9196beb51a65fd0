"""A local control plane for trying and testing Deltaroll without a cluster.

- :mod:`.apiserver` — a Kubernetes API over HTTPS: kmock's scaffold (discovery, Status errors)
  plus a faithful store (one resourceVersion counter, watches with 410/bookmarks, the three patch
  types, selectors, status subresources, finalizers, garbage collection, CRDs with schema
  pruning/defaulting/validation incl. CEL, ``/openapi/v3``, Tables for ``kubectl get``).
- :mod:`.kubelet` — runs pods' containers as local processes; how mounts, ports and env map onto
  one machine is documented in that package.
- :mod:`.controllers` — minimal Job and Deployment controllers.

Use it:

- ``deltaroll sandbox up [--dir DIR] [--port N]`` — foreground; prints ``DIR/kubeconfig``.
- ``async with Sandbox(directory) as sb:`` — in a running loop; ``sb.kubeconfig_path``,
  ``sb.api_url``, ``sb.api.store`` (the objects, for white-box checks).
- :func:`deltaroll.sandbox.testing.running_sandbox` — the same from sync code (a thread), with
  ``kubectl(...)``, ``api_client()``, ``env()``; :mod:`.pytest_fixtures` has a ``sandbox``
  fixture (``KUBECONFIG`` set) to import into a conftest.py.

Known limits: no images (a container needs a ``command``), no Services/networking beyond
loopback ports, no admission webhooks or conversion webhooks, protobuf bodies only for
Namespaces, ConfigMaps and Secrets (``kubectl create job|deployment`` → use ``kubectl apply``),
lists are never paginated, and Deployments own their pods directly (no ReplicaSets).
"""

from deltaroll.sandbox.sandbox import Sandbox

__all__ = ["Sandbox"]
