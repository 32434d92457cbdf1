"""The prediction process: answers queued Test-tab requests (backend.jobs.prediction_queue) with the models
it loads and keeps between requests, labels the images of labelling jobs between them (backend.jobs.label_queue),
then ends once nothing has been asked for a while.

The worker starts one on a free GPU (a GPU training a run is not free: its requests wait for the run to end)
and one on the CPU for the requests that asked for it (on a worker without GPUs, the CPU one answers all).
A GPU answerer ends as soon as nothing is queued for it and a run is waiting, so it never holds training up
for longer than the answer it is giving.

    python -m backend.jobs.answerer --data-dir DIR --owner NAME --serves {all,cpu,gpu} [--linger 120]

Like a training job, an answerer belongs to the worker that started it (backend.jobs.ownership): asked to stop
(SIGTERM) or finding its worker gone, it ends after the answer it is giving.

This module's top level imports no training stack: the worker imports it to start and watch answerers.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select

from backend.data.workspace import Workspace, open_workspace
from backend.jobs import label_queue, prediction_queue
from backend.jobs.ownership import OWNER_ENV, Lifeline
from storage.models import Run

LINGER_SECONDS = 120.0
"""How long an answerer keeps its model loaded with nothing asked (a follow-up question is answered at once)."""
SERVES = {"all": None, "cpu": True, "gpu": False}
"""--serves: which requests an answerer takes (prediction_queue's `cpu` argument)."""
LOG = "predictions.log"


def _runs_waiting(ws: Workspace) -> bool:
    with ws.store.read() as s:
        return s.scalar(select(Run.id).where(Run.status == "queued").limit(1)) is not None


def serve(ws: Workspace, owner: str, serves: str = "all", linger: float = LINGER_SECONDS, poll: float = 0.2,
          lifeline=None) -> int:
    """Answer requests until none has come for `linger` seconds (a GPU answerer: or a run is queued with no
    request waiting), or until `lifeline` (backend.jobs.ownership) says stop: asked to, or the worker that started it
    gone; returns how many were answered. A request that cannot be answered gets its sentence."""
    from backend.jobs.predict import answer_request
    cpu = SERVES[serves]
    answered, idle_since = 0, time.monotonic()
    while True:
        why = lifeline.reason() if lifeline is not None else None
        if why:
            print(f"answerer {owner}: {why}; stopping", flush=True)
            return answered
        job = prediction_queue.claim(ws, owner, cpu)
        if job is None and _label_some(ws, owner, serves, lifeline):
            idle_since = time.monotonic()
            continue
        if job is None:
            if time.monotonic() - idle_since > linger or (serves == "gpu" and _runs_waiting(ws)):
                return answered
            time.sleep(poll)
            continue
        try:
            prediction_queue.finish(ws, job["id"], {"answers": answer_request(ws, job["request"]), "by": owner})
        except ValueError as e:
            prediction_queue.finish(ws, job["id"], error=str(e))
        except Exception as e:  # noqa: BLE001 - the page shows one sentence; the traceback goes to the log
            traceback.print_exc()
            prediction_queue.finish(ws, job["id"], error=f"the prediction failed ({type(e).__name__}: {e}); "
                                                         f"see {LOG} in the data dir")
        answered += 1
        idle_since = time.monotonic()
        print(f"answerer {owner}: answered request {job['id']}", flush=True)


def _label_some(ws: Workspace, owner: str, serves: str, lifeline) -> bool:
    """Label images of a waiting labelling job (backend.jobs.label_queue) until it ends, a Test-tab question comes
    (it goes first; the job goes back to the queue), a GPU answerer has a run waiting, or this answerer must stop.
    Whether there was a job."""
    cpu = SERVES[serves]
    job_id = label_queue.claim(ws, owner, cpu)
    if job_id is None:
        return False

    def stop() -> bool:
        return ((lifeline is not None and lifeline.reason() is not None) or prediction_queue.pending(ws, cpu, False)
                or (serves == "gpu" and _runs_waiting(ws)))
    n = label_queue.work(ws, job_id, owner, stop)
    print(f"answerer {owner}: labelled {n} images of labelling job {job_id}", flush=True)
    return True


@dataclass
class Answerer:
    """An answerer process the worker started, on `gpu` (a GPU slot's CUDA_VISIBLE_DEVICES) or the CPU."""
    proc: subprocess.Popen
    owner: str
    gpu: str | None
    asked: bool = False

    def ended(self, ws: Workspace) -> bool:
        """Whether it has ended; requests it was answering when it died get a sentence instead of hanging."""
        code = self.proc.poll()
        if code is None:
            return False
        prediction_queue.abandon(ws, self.owner, f"the prediction process ended (exit status {code}) before "
                                                 f"answering; see {LOG} in the data dir")
        label_queue.release(ws, self.owner)  # its answers are kept; the next answerer labels the rest
        return True

    def ask_to_stop(self) -> None:
        """SIGTERM: it ends after the answer it is giving (backend.jobs.ownership)."""
        if self.proc.poll() is None and not self.asked:
            self.asked = True
            self.proc.terminate()

    def stop(self, ws: Workspace) -> None:
        """End it (the worker is stopping): asked to, then killed if still there after 10 s; a question it was
        answering gets a sentence."""
        if self.proc.poll() is None:
            self.ask_to_stop()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        prediction_queue.abandon(ws, self.owner, "the worker stopped before answering: ask again")
        label_queue.release(ws, self.owner)


def start_answerer(ws: Workspace, owner: str, serves: str, gpu: str | None, linger: float = LINGER_SECONDS) -> Answerer:
    """Start an answerer process: on `gpu`, or with no GPU visible (gpu None and serves "cpu")."""
    from backend.jobs.starter import ROOT, job_env
    name = f"{owner}:{serves}" + (f":gpu{gpu}" if gpu is not None else "")
    hide = gpu is None and serves == "cpu"  # the CPU answerer of a worker with GPUs sees none of them
    env = job_env({"CUDA_VISIBLE_DEVICES": ""} if hide else {} if gpu is None else {"CUDA_VISIBLE_DEVICES": gpu})
    with open(ws.data_dir / LOG, "ab") as log:
        proc = subprocess.Popen([sys.executable, "-m", "backend.jobs.answerer", "--data-dir", str(ws.data_dir),
                                 "--owner", name, "--serves", serves, "--linger", str(linger)],
                                cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, env=env)
    return Answerer(proc, name, gpu)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", required=True)
    p.add_argument("--owner", default=f"answerer:{os.getpid()}")
    p.add_argument("--serves", choices=list(SERVES), default="all")
    p.add_argument("--linger", type=float, default=LINGER_SECONDS)
    args = p.parse_args(argv)
    from backend.engine.quiet import silence_known_notices
    silence_known_notices()
    lifeline = Lifeline() if OWNER_ENV in os.environ else None  # started by a worker: stops with it
    ws = open_workspace(Path(args.data_dir))
    serve(ws, args.owner, args.serves, args.linger, lifeline=lifeline)
    return 0


if __name__ == "__main__":
    sys.exit(main())
