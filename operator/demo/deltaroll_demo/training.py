"""The one small-model trainer of the demo, the tests and the benchmarks: real AdamW steps.

Consecutive checkpoints of a real training run are what Deltaroll ships, so every checkpoint the
demo, the tests (tests/fixtures/checkpoints.py, tests/engines/checkpoints.py) and the benchmarks
(benchmarks/codec_training.py, benchmarks/store.py, benchmarks/rollout.py) make comes from here:
each caller brings its model and its loss (what a step trains on), and saves what it needs.

It lives in the demo's distribution because all three can import it and the product does not:
no image installs ``deltaroll_demo``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

#: The loss of step ``n`` (1-based: the first optimizer step is step 1).
Loss = Callable[[int], "torch.Tensor"]


class Trainer:
    """A model and its AdamW optimizer; :meth:`step` takes one real optimizer step."""

    def __init__(self, model: torch.nn.Module, loss: Loss, *, lr: float = 1e-3) -> None:
        import torch

        self.model = model
        self.loss = loss
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
        self.steps_taken = 0

    def step(self, lr: float | None = None) -> float:
        """One AdamW step (at ``lr`` from now on, when given); returns the step's loss."""
        if lr is not None:
            for group in self.optimizer.param_groups:
                group["lr"] = lr
        self.steps_taken += 1
        loss = self.loss(self.steps_taken)
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        return float(loss.detach())
