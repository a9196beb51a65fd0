"""Where a pod's engine answers: ``http://<podIP>:<port>``.

The port is ``spec.engine.port``, or the pod's containerPort named ``spec.engine.portName``. On
the sandbox every pod shares 127.0.0.1, so its kubelet maps each container port to a free host
port and publishes the mapping in the ``sandbox.deltaroll.dev/ports`` annotation (a JSON object
keyed by port number and name); when that annotation is present, it wins.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Final

from deltaroll.api.modeldeployment import EngineSpec
from deltaroll.controllers.analysis.errors import MeasurementError

SANDBOX_PORTS_ANNOTATION: Final = "sandbox.deltaroll.dev/ports"


def engine_url(pod: Mapping[str, Any], engine: EngineSpec) -> str:
    """The engine's base URL in ``pod``; :class:`MeasurementError` when it has none yet."""
    meta, status = pod.get("metadata") or {}, pod.get("status") or {}
    name = meta.get("name")
    ip = status.get("podIP")
    if not ip:
        raise MeasurementError(f"pod {name} has no IP yet; it is not running")
    port = _port(pod, engine)
    mapped = (meta.get("annotations") or {}).get(SANDBOX_PORTS_ANNOTATION)
    if mapped:
        port = int(json.loads(mapped).get(str(port), port))
    host = f"[{ip}]" if ":" in ip else ip
    return f"http://{host}:{port}"


def _port(pod: Mapping[str, Any], engine: EngineSpec) -> int:
    if engine.port_name is None:
        return engine.port
    for container in (pod.get("spec") or {}).get("containers") or []:
        for port in container.get("ports") or []:
            if port.get("name") == engine.port_name:
                return int(port["containerPort"])
    raise MeasurementError(
        f"pod {(pod.get('metadata') or {}).get('name')} has no containerPort named "
        f"{engine.port_name!r} (spec.engine.portName); name the engine's port or set "
        "spec.engine.port"
    )
