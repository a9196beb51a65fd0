"""What a tenant reads from the operator, scrubbed: status messages and Events.

Conditions scrub their own messages (:func:`deltaroll.api.conditions.set_condition`); this
module does the same for the status' summary and the analysis runs' messages, and posts Events,
so no credential, presigned URL, internal endpoint or link-local address the operator met
reaches an object a tenant can read (:func:`deltaroll.redact.scrub`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal, cast

import kopf

from deltaroll.redact import scrub


def scrubbed_status(status: dict[str, Any]) -> dict[str, Any]:
    """``status`` (wire form) with its free-text messages scrubbed."""
    if isinstance(status.get("message"), str):
        status = {**status, "message": scrub(status["message"])}
    runs = status.get("analysisResults")
    if isinstance(runs, list):
        status["analysisResults"] = [
            {**run, "message": scrub(run["message"])}
            if isinstance(run.get("message"), str)
            else run
            for run in runs
        ]
    return status


def post_event(
    body: Mapping[str, Any], type_: Literal["Normal", "Warning"], reason: str, message: str
) -> None:
    """One Event on the object, its message scrubbed."""
    post = kopf.warn if type_ == "Warning" else kopf.info
    post(kopf.Body(cast("kopf.RawBody", dict(body))), reason=reason, message=scrub(message))
