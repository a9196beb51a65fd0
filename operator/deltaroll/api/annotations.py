"""Names that the operator, the agent and the kubectl plugin exchange through annotations.

On inference pods: the operator writes :data:`POD_VERSION` (what the pod should serve, read by
the agent through a downwardAPI volume) with :data:`POD_SEED_AMONG` (who may fetch its objects
from the bucket) and, when its ModelDeployment names publisher keys, :data:`POD_VERIFY_KEYS`
(the keys whose signature the agent requires); the agent reports
:data:`POD_CURRENT_VERSION`, :data:`POD_AGENT_STATE`, :data:`POD_LAST_CHANGE` (what its last
version change cost) and, when it serves peers, :data:`POD_PEER_PORT`, and sets the pod condition
:data:`WEIGHTS_READY_CONDITION`, a readiness gate, so a pod that is swapping weights takes no
traffic.

On a ModelDeployment: ``kubectl deltaroll promote|abort|retry`` set :data:`PROMOTE`, :data:`ABORT`
or :data:`RETRY`; the controller acts on it, records the outcome in status (``abort``,
``pauseStartTime``, ``phase``) and removes the annotation. Requests live in annotations rather
than spec so a GitOps tool that owns spec is never fought.
"""

from __future__ import annotations

from typing import Final

PREFIX: Final = "deltaroll.dev"

POD_VERSION: Final = f"{PREFIX}/version"
POD_SEED_AMONG: Final = f"{PREFIX}/seed-among"
"""Written with :data:`POD_VERSION`: the pods (comma-separated names, at most
:data:`~deltaroll.api.peers.SEED_CANDIDATES`) among which agents rank each of the version's
objects' seeders (:func:`deltaroll.api.peers.seed_among`)."""
POD_VERIFY_KEYS: Final = f"{PREFIX}/verify-keys"
"""Comma-separated ``ed25519:<base64 of the raw 32-byte key>``: the publisher keys whose
signature the pod's agent requires of every version (``spec.verification.publicKeys``)."""
POD_CURRENT_VERSION: Final = f"{PREFIX}/current-version"
POD_PEER_PORT: Final = f"{PREFIX}/peer-port"
"""The port on ``status.podIP`` where the pod's agent serves its verified objects to the other
agents of its ModelDeployment (:mod:`deltaroll.api.peers`); absent: the pod serves none."""
POD_AGENT_STATE: Final = f"{PREFIX}/agent-state"
POD_LAST_CHANGE: Final = f"{PREFIX}/last-change"
"""The pod's last version change (:class:`~deltaroll.api.weight_change.WeightChange`, JSON):
bytes applied, pause seconds, in-memory or disk reload."""
WEIGHTS_READY_CONDITION: Final = f"{PREFIX}/weights-ready"

PROMOTE: Final = f"{PREFIX}/promote"
"""Value ``step`` ends the current pause or analysis step; ``full`` skips every remaining step."""
ABORT: Final = f"{PREFIX}/abort"
"""Any value: move every pod back to the stable version and mark the deployment Degraded."""
ROLLBACK: Final = "rollback"
"""The value ``kubectl deltaroll rollback`` gives the abort annotation: the same abort, named."""
RETRY: Final = f"{PREFIX}/retry"
"""Any value: clear an abort and roll out spec.version again from the first step."""

KOPF_PREFIX: Final = f"operator.{PREFIX}"
"""Kopf's own bookkeeping on our custom objects (handler progress, the last handled state).
A prefix of its own: Kopf leaves every annotation under a storage's prefix out of the state it
diffs, so under ``deltaroll.dev`` a promote, abort or retry fired no update handler and waited
for the next timer tick. Not ``kopf.*``: Kopf marks (and so leaves out) only other prefixes."""
FINALIZER: Final = f"{PREFIX}/cleanup"
"""The finalizer the operator puts on a ModelDelta with ``deletionPolicy: Delete`` (its store
clean-up must run before the object goes); a ModelDeployment needs none."""
LAST_HANDLED_KEY: Final = "last-handled-configuration"
LAST_HANDLED: Final = f"{KOPF_PREFIX}/{LAST_HANDLED_KEY}"
"""Kopf's record of the spec it last handled (its diff-base), kept on our custom objects: with
it a restarted operator resumes an object instead of handling its creation again."""
