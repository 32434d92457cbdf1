"""A training job's processes: which one writes (under `accelerate launch`, RANK 0 of WORLD_SIZE), what they
agree on, and greedy generation with the trainer's current weights shared among them (held-out evaluation)."""
from __future__ import annotations

import dataclasses
import os
from contextlib import contextmanager
from typing import Callable, Iterator

GenerateFn = Callable[[list, int], list[str]]
"""(image, prompt) pairs and max new tokens -> greedy completions (backend.engine.heldout.GenerateFn)."""


class Processes:
    """This job process among those `accelerate launch` started (RANK of WORLD_SIZE; 0 of 1 without it).

    Only the main process (RANK 0) writes to storage; what every process must do alike (stop, evaluate) is
    the main process's decision, broadcast.
    """

    def __init__(self) -> None:
        self.rank = int(os.environ.get("RANK", "0"))
        self.count = int(os.environ.get("WORLD_SIZE", "1"))
        self.main = self.rank == 0

    def agree(self, value):
        """The main process's `value`, in every process."""
        if self.count == 1:
            return value
        from accelerate.utils import broadcast_object_list
        box = [value]
        broadcast_object_list(box, from_process=0)
        return box[0]

    def wait(self) -> None:
        if self.count > 1:
            from accelerate import PartialState
            PartialState().wait_for_everyone()

    def share(self, generate: GenerateFn) -> GenerateFn:
        """`generate` with the prompts dealt among the processes; every process gets every completion, in order.
        Each process calls `generate`, with no prompts if none is its (ZeRO-3 gathers weights collectively)."""
        if self.count == 1:
            return generate

        def shared(items, max_new_tokens):
            from accelerate.utils import gather_object
            mine = list(range(self.rank, len(items), self.count))
            done = generate([items[i] for i in mine], max_new_tokens)
            return [text for _, text in sorted(gather_object(list(zip(mine, done))))]
        return shared


def hf_generate(loaded) -> GenerateFn:
    from backend.engine.inference import generate
    return lambda items, max_new_tokens: generate(loaded, items, max_new_tokens=max_new_tokens)


@contextmanager
def current_weights(trainer, loaded, fast: GenerateFn | None, processes: Processes) -> Iterator[GenerateFn]:
    """Greedy generation with the trainer's weights as they are now, the model in eval mode (no dropout) for
    the duration and back to training after: `fast` (the trainer's vLLM engine) when there is one, else HF
    generate (under several processes on the unwrapped model: ZeRO-3 gathers the sharded weights)."""
    model = trainer.model
    was_training = model.training
    model.eval()
    try:
        if fast is not None:
            yield fast
        elif processes.count > 1:
            from trl.models.utils import unwrap_model_for_generation
            with unwrap_model_for_generation(trainer.model_wrapped, trainer.accelerator) as unwrapped:
                yield hf_generate(dataclasses.replace(loaded, model=unwrapped))
        else:
            yield hf_generate(dataclasses.replace(loaded, model=model))
    finally:
        if was_training:
            model.train()
