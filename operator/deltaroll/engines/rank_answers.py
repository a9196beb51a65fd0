"""One engine's answer from its ranks' answers to an in-memory patch (vLLM and SGLang adapters).

Every rank of a vLLM or SGLang server answers for itself (:class:`PatchResult`); the patch
happened only if every rank says ``applied``. Otherwise the first rank that gives its own reason
(the others say "another rank ...") names why, as a
:class:`~deltaroll.engines.errors.LayoutChangeError` when only a reload can apply the delta, or a
:class:`~deltaroll.engines.errors.LivePatchError`; the agent reloads from disk either way.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError

from deltaroll.api.engine_patch import PatchResult, RankDigests
from deltaroll.api.weight_change import LiveApplyResult
from deltaroll.engines.errors import LayoutChangeError, LivePatchError

_PEER = "another rank"


def parse_answers(raw: Any, ranks: int | None = None) -> list[PatchResult]:
    """Each rank's :class:`PatchResult` from a JSON list; LivePatchError for anything else,
    or for fewer answers than ``ranks``."""
    if not isinstance(raw, list) or not raw:
        raise LivePatchError(f"the engine's ranks answered {str(raw)[:200]!r}, not a result each")
    try:
        answers = [PatchResult.model_validate(item) for item in raw]
    except ValidationError as exc:
        raise LivePatchError(
            f"a rank's answer is not a Deltaroll patch result ({exc.error_count()} problems): "
            "is the engine's Deltaroll extension the agent's version?"
        ) from exc
    if ranks is not None and len(answers) < ranks:
        raise LivePatchError(f"{len(answers)} of the engine's {ranks} ranks answered")
    return answers


def combined(
    answers: Sequence[PatchResult], version: str, *, pause_s: float, drain_s: float
) -> LiveApplyResult:
    """The engine's result when every rank applied the patch; raises otherwise."""
    if all(a.outcome == "applied" for a in answers):
        return LiveApplyResult(
            version=version,
            bytes_applied=sum(a.bytes_applied for a in answers),
            changed_elements=max(a.changed_elements for a in answers),
            write_s=max(a.write_s for a in answers),
            prepare_s=max(a.prepare_s for a in answers),
            held_requests=0,
            pause_s=pause_s,
            held_s=pause_s,
            drain_s=drain_s,
        )
    failed = [a for a in answers if a.outcome != "applied"]
    own = [a for a in failed if _PEER not in a.reason] or failed
    first = min(own, key=lambda a: a.rank)
    kept = all(a.old_weights_kept for a in answers)
    message = f"rank {first.rank}: {first.reason}"
    if any(a.outcome == "failed" for a in answers) or not kept:
        raise LivePatchError(message, old_weights_kept=kept)
    raise LayoutChangeError(message)


#: What a tensor whose ranks hold differing copies reports: the digest of no version.
REPLICAS_DIFFER = "0" * 64


def parse_digests(raw: Any) -> list[RankDigests]:
    """Each rank's :class:`RankDigests` from a JSON list; LivePatchError for anything else."""
    if not isinstance(raw, list) or not raw:
        raise LivePatchError(f"the engine's ranks answered {str(raw)[:200]!r}, not digests each")
    try:
        return [RankDigests.model_validate(item) for item in raw]
    except ValidationError as exc:
        raise LivePatchError(
            f"a rank's answer is not Deltaroll digests ({exc.error_count()} problems): is the "
            "engine's Deltaroll extension the agent's version?"
        ) from exc


def agreed_digests(answers: Sequence[RankDigests]) -> dict[str, str]:
    """The digests every rank reports (they hash the same gathered bytes); a tensor whose
    replicas differ gets :data:`REPLICAS_DIFFER`. LivePatchError when a tensor cannot be
    hashed, or when the ranks disagree."""
    for answer in answers:
        for name, reason in answer.unhashable.items():
            raise LivePatchError(f"rank {answer.rank} cannot hash {name}: {reason}")
    first = answers[0]
    if any(a.digests != first.digests for a in answers[1:]):
        raise LivePatchError("the engine's ranks hashed the same tensors to different digests")
    differ = {n: REPLICAS_DIFFER for a in answers for n in a.replicas_differ}
    return {**first.digests, **differ}
