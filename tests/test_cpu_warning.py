"""A model far bigger than the demo, queued on a machine without a GPU: `runs create` says (on stderr, the run queued
all the same) how much memory and time a CPU run of it would take; the demo and GPU machines get no warning."""
from __future__ import annotations

import re

from backend.data.demo.dataset import ensure_demo_dataset
from backend.engine.cpu_advice import cpu_estimate, cpu_warning
from backend.engine.memory import model_shape
from backend.engine.settings import preset
from tests.conftest import run_cli


def test_runs_create_warns_with_the_memory_and_time_of_a_cpu_run(ws):
    ensure_demo_dataset(ws.store, ws.data_dir, n=10)
    proc = run_cli("runs", "create", "--dataset", "demo-shapes", "--model", "Qwen/Qwen2.5-VL-3B-Instruct",
                   "--json", data_dir=ws.data_dir)
    assert re.fullmatch(r"warning: this machine has no GPU, so a worker here would train Qwen/Qwen2\.5-VL-3B-Instruct "
                        r"\(3\.8B parameters, against the demo's few million\) on the CPU: about \d+ GiB of memory and roughly [\d.]+ "
                        r"(h|min) per step \([\d.]+ (h|min) for \d+ steps\)\. Train it where a worker has a GPU, or try "
                        r"the walk with the demo model first\.\n", proc.stderr), proc.stderr
    assert '"id": 1' in proc.stdout  # queued all the same: a worker with a GPU may take it
    demo = run_cli("runs", "create", "--dataset", "demo-shapes", "--model", "demo", data_dir=ws.data_dir)
    assert demo.stderr == ""


def test_the_estimate_grows_with_the_model_and_no_gpu_machine_is_warned():
    settings = preset("CPU demo")
    small, big = (cpu_estimate(settings, model_shape(m)) for m in ("Qwen/Qwen2-VL-2B-Instruct",
                                                                      "Qwen/Qwen2.5-VL-7B-Instruct"))
    assert small["memory_gib"] < big["memory_gib"] and small["step_seconds"] < big["step_seconds"]
    assert big["run_seconds"] == round(big["step_seconds"] * settings.max_steps) or \
        abs(big["run_seconds"] - big["step_seconds"] * settings.max_steps) <= settings.max_steps
    assert cpu_warning("Qwen/Qwen2.5-VL-7B-Instruct", settings, has_gpu=True) is None
    assert cpu_warning("demo", settings, has_gpu=False) is None
