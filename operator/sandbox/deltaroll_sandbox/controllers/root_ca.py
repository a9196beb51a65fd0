"""kube-controller-manager's root-ca-cert-publisher: a ``kube-root-ca.crt`` ConfigMap with the
API server's CA (key ``ca.crt``) in every namespace, which projected ServiceAccount token volumes
read to trust the API server."""

from __future__ import annotations

from deltaroll_sandbox.apiserver.builtins import NAMESPACES
from deltaroll_sandbox.apiserver.store import Store, WatchEvent
from deltaroll_sandbox.controllers import informers

NAME = "kube-root-ca.crt"


class RootCAPublisher:
    def __init__(self, store: Store, ca_pem: str) -> None:
        self.store = store
        self.ca_pem = ca_pem
        self.configmaps = informers.resource(store, "", "v1", "configmaps")

    async def run(self) -> None:
        async for event in informers.events(self.store, {NAMESPACES}):
            informers.guarded(self._on_event, event)

    def _on_event(self, event: WatchEvent) -> None:
        meta = event.obj["metadata"]
        if event.type == "DELETED" or meta.get("deletionTimestamp"):
            return
        namespace = meta["name"]
        data = {"ca.crt": self.ca_pem}
        current = self.store.find(self.configmaps, namespace, NAME)
        if current is None:
            self.store.create(
                self.configmaps, namespace, {"metadata": {"name": NAME}, "data": data}
            )
        elif current.get("data") != data:
            self.store.mutate(self.configmaps, namespace, NAME, lambda c: c.update(data=data))
