"""Which publisher keys this pod accepts, and the check that a version carries their signature.

Two sources, joined: the agent's own configuration (``--verify-key`` PEM files or a mounted
ConfigMap directory of ``*.pem``, ``DELTAROLL_VERIFY_KEYS``) and the keys the operator writes
on the pod from its ModelDeployment's ``spec.verification.publicKeys``
(:data:`~deltaroll.api.annotations.POD_VERIFY_KEYS`, read from the same downwardAPI file as the
wanted version). With no key from either, versions are not checked (as before signing existed);
with any, a version that no accepted key signed is refused before anything is fetched, and the
manifest that would produce it is checked against the signed digest before the weights are
touched: the pod stays on its verified version and reports Failed. A signature must be made
for this pod's store and, when it names a namespace (the operator's), for the pod's; a version
chosen by name must be named at a sequence no lower than the highest this pod accepted
(remembered beside the weights volume, so a restart does not forget it).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from deltaroll.agent.errors import AgentConfigError
from deltaroll.agent.wanted import read_pod_keys
from deltaroll.store import Store
from deltaroll.store.name_sequences import NameSequences
from deltaroll.store.pull import chosen_name
from deltaroll.store.signatures import SignedTarget
from deltaroll.store.signing import KeyFileError, PublicKey, load_public_keys, parse_inline_key


class VersionTrust:
    """The keys one agent accepts; remembers the last version it found signed."""

    def __init__(
        self,
        configured: Sequence[Path],
        annotations_file: Path,
        *,
        namespace: str,
        sequences: NameSequences,
    ) -> None:
        try:
            self.configured = load_public_keys(configured)
        except KeyFileError as exc:
            raise AgentConfigError(f"--verify-key: {exc}") from exc
        self.annotations_file = annotations_file
        self.namespace = namespace
        self.sequences = sequences
        self._signed: SignedTarget | None = None

    def keys(self) -> list[PublicKey]:
        """The configured keys and those the operator wrote on the pod now."""
        inline = [parse_inline_key(text) for text in read_pod_keys(self.annotations_file)]
        return [*self.configured, *inline]

    def check(self, store: Store, model: str, wanted: str, target: str) -> SignedTarget | None:
        """The signed statement of ``target`` (``wanted`` resolved), or None when this pod
        accepts unsigned versions; the store's ``SignatureError`` when it is not signed."""
        trusted = self.keys()
        if not trusted:
            return None
        cached = self._signed
        if (
            cached is not None
            and cached.statement.version == target
            and cached.key_id in {key.key_id for key in trusted}
            and (wanted == target or wanted in cached.statement.names)
        ):
            return cached
        name = None if wanted == target else chosen_name(store.catalog, model, wanted)
        self._signed = store.signed(
            model, target, trusted, name=name, namespace=self.namespace, sequences=self.sequences
        )
        return self._signed
