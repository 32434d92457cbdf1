"""What a training job does between the trainer's steps: its TrainerCallback (progress, metrics, rollouts,
checkpoints recorded complete, cancel read at each step boundary) and its held-out evaluations (the curve that
picks the best checkpoint). Only the main process (RANK 0) writes to storage; every write carries the lease."""
from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Callable

from backend.data.catalog import heldout_split
from backend.data.workspace import Workspace
from backend.engine.grpo import RolloutRecorder
from backend.engine.processes import GenerateFn, Processes
from backend.engine.settings import TrainSettings, eval_interval
from backend.jobs.run_history import (evaluations, record_checkpoint, save_evaluation, save_heldout_point, store_rollouts,
                                      stored_completions, upsert_metrics)
from backend.jobs.runs import get_run, record_step
from backend.jobs.step_summary import step_line
from backend.scoring.evaluation import scoped_metrics


def stop_reason(ws: Workspace, run_id: int, token: str | None, lifeline) -> str | None:
    """Why the job must stop at this step boundary, keeping its run for later (None: go on): asked to (its worker
    stopping), or its worker gone: the process is no more, or nobody renews the lease (read from the database,
    so also where /proc is not, and for the processes of an `accelerate launch`)."""
    why = lifeline.reason() if lifeline is not None else None
    if why is None and token is not None:
        from backend.jobs.leases import lease_lapsed
        if lease_lapsed(ws, run_id, token):
            why = "its worker is gone (nobody renews its lease)"
    return why


def make_callback(ws: Workspace, run_id: int, settings: TrainSettings, recorder: RolloutRecorder | None,
                  output_dir: Path, token: str | None = None, lifeline=None):
    """The job's TrainerCallback (`recorder` None: a method that samples nothing, SFT). Its `heldout` is set
    once the trainer exists: the evaluations it runs during training. `lifeline` (backend.jobs.ownership): a stop
    asked for, or the worker gone, ends training at the step boundary with a checkpoint; `stopped` then says
    (step, why)."""
    from transformers import TrainerCallback
    processes = Processes()

    class StudioCallback(TrainerCallback):
        """Metrics, rollouts, checkpoints, progress and held-out evaluations to storage; cancel at the next step."""

        def __init__(self):
            self.step_started = time.time()
            self.step_seconds = 0.0
            self.heldout: HeldoutEvaluations | None = None
            self.stopped: tuple[int, str] | None = None
            self.diverged: tuple[int, str] | None = None
            """(step, what): the step whose training loss or gradient norm was NaN or infinite: training stopped
            there, without saving it."""

        def on_step_begin(self, args, state, control, **kw):
            self.step_started = time.time()

        def on_log(self, args, state, control, logs=None, **kw):
            if not logs or state.global_step < 1:
                return
            # Every process logs the same gathered loss and gradient norm; they stop together, at this step.
            broken = [k for k in ("loss", "grad_norm") if isinstance(logs.get(k), (int, float))
                      and not math.isfinite(logs[k])]
            if processes.agree(bool(broken)):  # the weights are no longer numbers (or will not be after this update)
                self.diverged = (state.global_step, "training loss" if "loss" in broken or not broken
                                 else "gradient norm")
                control.should_training_stop = True
                control.should_save = False  # the last good checkpoint stays the newest
            if not state.is_world_process_zero:  # the main process writes
                return
            values = {k: v for k, v in logs.items() if isinstance(v, (int, float)) and not k.startswith(("total_flos", "train_"))}
            values["step_time"] = self.step_seconds  # without the held-out evaluation at its end
            upsert_metrics(ws.store, run_id, state.global_step, values, token=token)
            print(step_line(state.global_step, settings.max_steps, values), flush=True)

        def on_step_end(self, args, state, control, **kw):
            self.step_seconds = time.time() - self.step_started
            step = state.global_step
            cancel, why = False, None
            if state.is_world_process_zero:  # only the main process writes to storage
                if recorder is not None and (step % settings.rollout_steps == 0 or step == 1):
                    room = settings.rollout_max_completions - stored_completions(ws.store, run_id, step)
                    rows = recorder.take(settings.rollout_groups_per_step, room)
                    if rows:  # once per (step, prompt, sample): a step repeated after a resume replaces its own
                        store_rollouts(ws.store, run_id, step, rows, token=token)
                cancel = record_step(ws.store, run_id, step, token=token)
                why = None if cancel else stop_reason(ws, run_id, token, lifeline)
            cancel, why = processes.agree((cancel, why))  # every process stops at the same step
            if cancel or why:
                control.should_training_stop = True
                control.should_save = True  # the resume point
                if why:
                    self.stopped = (step, why)
            elif self.heldout is not None and self.heldout.due(step):  # every process takes part
                self.heldout.during(step)
                control.should_save = True  # the evaluated weights are kept: the best one can be used later
                # A cancel asked during the evaluation stops here, at this checkpoint, not a whole step later.
                asked = state.is_world_process_zero and get_run(ws.store, run_id).cancel_requested
                if processes.agree(asked):
                    control.should_training_stop = True

        def on_save(self, args, state, control, **kw):
            # Called after the checkpoint folder is fully written: only now is it "complete".
            processes.wait()  # every process has written its part (its RNG state)
            if not state.is_world_process_zero:
                return
            path = output_dir / f"checkpoint-{state.global_step}"
            rel = path.relative_to(ws.data_dir).as_posix()
            record_checkpoint(ws.store, run_id, state.global_step, rel, token=token)

    return StudioCallback()


class HeldoutEvaluations:
    """A job's held-out evaluations (greedy). Each is a point of the run's curve, scored on the first
    eval_max_examples held-out prompts (the same ones every time: before, during, best and after compare); the one
    before training (step 0) and the one after also store the evaluation as the run's before/after, with the seconds
    it took."""

    def __init__(self, ws: Workspace, run_id: int, token: str | None, loaded, dataset: dict,
                 settings: TrainSettings, processes: Processes):
        self.ws, self.run_id, self.token, self.loaded, self.dataset = ws, run_id, token, loaded, dataset
        self.settings, self.processes = settings, processes
        self.split, self.val = heldout_split(dataset)  # val, else the export's test; never both
        self.interval = eval_interval(settings)
        self.now: Callable[[], object] | None = None
        """The trainer's current weights as a context manager giving a GenerateFn (set once the trainer exists)."""

    def before_needed(self) -> bool:
        """Whether the model has still to be evaluated before training (not on a resume); every process asks
        before any of them can store it."""
        return bool(self.val) and "before" not in evaluations(self.ws.store, self.run_id)

    def due(self, step: int) -> bool:
        """Every `interval` steps, except the last (the evaluation after training is that point)."""
        return bool(self.val) and self.interval > 0 and step % self.interval == 0 and step < self.settings.max_steps

    def during(self, step: int) -> None:
        with self.now() as generate:
            self.evaluate(step, "during", generate)

    def evaluate(self, step: int, phase: str, generate: GenerateFn) -> None:
        """Evaluate now, as point `step` of the curve; `phase` "before" and "after" store the full evaluation too."""
        from backend.engine import heldout
        started = time.time()
        records = heldout.records(self.loaded, self.ws.data_dir, self.dataset, self.val, self.settings.task_settings(),
                                  self.settings.max_completion_length, self.settings.eval_max_examples,
                                  generate_fn=self.processes.share(generate))
        seconds = time.time() - started
        if not self.processes.main:
            return
        result = scoped_metrics(self.dataset["task"], records, self.settings.novel_classes)
        save_heldout_point(self.ws.store, self.run_id, step, result, seconds, token=self.token)
        if phase != "during":
            save_evaluation(self.ws.store, self.run_id, phase, {**result, "split": self.split, "seconds": seconds},
                            token=self.token)
