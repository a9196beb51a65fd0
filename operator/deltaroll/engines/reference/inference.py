"""What the reference engine computes: completions and the mean token loss of given texts.

Both run on a :class:`LoadedModel` passed in, never on shared mutable state, so a request keeps
the weights it started with even if a reload swaps the engine's model meanwhile.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from deltaroll.engines.errors import EngineRequestError
from deltaroll.engines.reference.loading import LoadedModel


@dataclass(frozen=True)
class Completion:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # "stop" (end-of-sequence token) or "length"


@dataclass(frozen=True)
class Evaluation:
    loss: float  # mean negative log-likelihood per predicted token, in nats
    tokens: int  # predicted tokens the mean is over


def complete(
    loaded: LoadedModel, prompt: str, *, max_tokens: int, temperature: float
) -> Completion:
    """Continue ``prompt``: greedy when ``temperature`` is 0, sampled otherwise."""
    import torch

    ids = loaded.tokenizer.encode(prompt)
    if not ids:
        raise EngineRequestError("prompt is empty after tokenization: send at least one character")
    if len(ids) + max_tokens > loaded.context_length:
        raise EngineRequestError(
            f"prompt ({len(ids)} tokens) plus max_tokens ({max_tokens}) exceed the model's "
            f"context of {loaded.context_length} tokens: shorten one of them"
        )
    model: Any = loaded.model  # transformers' generate() is untyped
    eos = model.generation_config.eos_token_id
    sampling: dict[str, Any] = (
        {"do_sample": True, "temperature": temperature} if temperature > 0 else {"do_sample": False}
    )
    input_ids = torch.tensor([ids], device=model.device)
    with torch.no_grad():
        output = model.generate(
            input_ids=input_ids,
            attention_mask=torch.ones_like(input_ids),
            max_new_tokens=max_tokens,
            min_new_tokens=0,
            pad_token_id=eos if isinstance(eos, int) else 0,
            **sampling,
        )
    new = output[0, len(ids) :].tolist()
    eos_ids = {eos} if isinstance(eos, int) else set(eos or [])
    stopped = bool(new) and new[-1] in eos_ids
    text = loaded.tokenizer.decode(new[:-1] if stopped else new)
    return Completion(text, len(ids), len(new), "stop" if stopped else "length")


def mean_token_loss(loaded: LoadedModel, texts: list[str]) -> Evaluation:
    """Token-weighted mean cross-entropy of next-token prediction over ``texts``."""
    import torch

    total = 0.0
    count = 0
    model = loaded.model
    for index, text in enumerate(texts):
        ids = loaded.tokenizer.encode(text)[: loaded.context_length]
        if len(ids) < 2:
            raise EngineRequestError(
                f"texts[{index}] has {len(ids)} token(s); a loss needs at least 2"
            )
        input_ids = torch.tensor([ids], device=model.device)
        with torch.no_grad():
            loss = model(input_ids=input_ids, labels=input_ids).loss
        total += float(loss) * (len(ids) - 1)
        count += len(ids) - 1
    return Evaluation(total / count, count)
