"""The pod agent: the sidecar that turns "serve version N" into verified weights in the engine.

It reads the wanted version from the pod's annotations (a downwardAPI file), pulls the deltas on
the cheapest path from the version on the weights volume, applies them crash-safely, asks the
engine to reload, and reports through its own pod (annotations and the ``weights-ready``
readiness-gate condition). Run it with ``deltaroll agent run``.

Modules: ``reconcile`` (the state machine), ``wanted`` (the annotations file), ``volume`` (the
weights directory and safe swaps), ``fetch`` (objects into the cache), ``patching`` (applying a
plan, finishing an interrupted apply), ``peer_server``, ``peer_directory`` and ``peer_fetch``
(serving verified objects to the agents of the same ModelDeployment, finding them, fetching from
them; ``throttle`` bounds the serving), ``report`` (the pod's annotations and condition),
``scrub`` (the background re-hash of the served weights, in a thread of its own), ``trust``
(the publisher keys the pod accepts and the signature check), ``health``
and ``metrics`` (``/healthz``, ``/metrics``; ``background_server`` runs both HTTP servers),
``config``, ``runner`` (wiring),
``errors``. The states it reports and their annotation format are a contract with the
controller: :mod:`deltaroll.api.agent_state`.
"""

from deltaroll.agent.config import AgentConfig
from deltaroll.agent.errors import AgentConfigError, AgentError, ReportError
from deltaroll.api.agent_state import AgentState, format_agent_state, parse_agent_state

__all__ = [
    "AgentConfig",
    "AgentConfigError",
    "AgentError",
    "AgentState",
    "ReportError",
    "format_agent_state",
    "parse_agent_state",
]
