"""The GPU paths, checked on a CPU: the GRPOConfig a job builds for hf and for vLLM (CUDA simulated), what
`runs create` refuses, the worker's job slots (one job per GPU, each seeing only its GPU), the command that
starts a multi-GPU run, and a two-process run (gloo) in which only the main process writes to storage."""
from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from types import SimpleNamespace

import pytest

from backend.data.demo.dataset import ensure_demo_dataset
from backend.engine.gpus import (accelerate_config, launch_command, parse_gpus, settings_problem, visible_gpus)
from backend.engine.run_plan import plan_run
from backend.engine.settings import TrainSettings, preset
from backend.jobs.runs import create_run
from backend.jobs.run_history import rollouts, run_json
from tests.conftest import run_cli


def _tiny(**overrides) -> TrainSettings:
    settings = preset("CPU demo", max_steps=2, num_generations=2, save_steps=2)
    settings.prompts_per_step, settings.eval_max_examples, settings.max_completion_length = 1, 2, 16
    for k, v in overrides.items():
        setattr(settings, k, v)
    return settings


# ------------------------------------------------------------------ the GRPOConfig a job builds

def job_config(settings: TrainSettings, device: str, vllm_available: bool, **plan) -> dict:
    """The GRPOConfig keywords a job builds on `device`: its run plan first, as training.run_job does (no model
    shape here: the plan's rule without an estimate)."""
    from backend.jobs.training import grpo_config_kwargs
    chosen = plan_run(settings, None, cuda=device == "cuda", vllm_installed=vllm_available, **plan)
    return grpo_config_kwargs(settings, Path("/tmp/out"), device, chosen, vllm_available)


def test_cpu_job_config_is_hf_generate_and_builds():
    from trl import GRPOConfig
    kwargs = job_config(_tiny(), "cpu", vllm_available=True)
    assert "use_vllm" not in kwargs and "use_liger_kernel" not in kwargs and "cache_implementation" not in kwargs
    assert kwargs["use_cpu"] is True and kwargs["bf16"] is False and kwargs["gradient_checkpointing"] is False
    assert kwargs["per_device_train_batch_size"] == 2 and kwargs["max_completion_length"] == 16
    config = GRPOConfig(**kwargs)  # what the job trains with on this machine
    assert config.use_vllm is False and config.num_generations == 2


@pytest.mark.parametrize("backend", ["auto", "vllm"])
def test_cuda_job_with_vllm_installed_generates_with_colocated_vllm(backend):
    from trl import GRPOConfig
    settings = _tiny(generation_backend=backend, vllm_gpu_memory_utilization=0.4, use_liger_kernel=True)
    kwargs = job_config(settings, "cuda", vllm_available=True)
    expected = {"use_vllm": True, "vllm_mode": "colocate", "vllm_gpu_memory_utilization": 0.4,
                "vllm_enable_sleep_mode": True}
    assert {k: kwargs[k] for k in expected} == expected
    assert kwargs["vllm_max_model_length"] == 4096 + 16
    assert kwargs["bf16"] is True and kwargs["use_cpu"] is False and kwargs["use_liger_kernel"] is True
    known = {f.name for f in dataclasses.fields(GRPOConfig)}
    assert set(kwargs) <= known  # every key is one of TRL 1.16's GRPOConfig fields


def test_vllm_share_comes_from_the_estimate_when_unset():
    settings = _tiny(generation_backend="vllm")
    plan = plan_run(settings, "Qwen/Qwen2.5-VL-3B-Instruct", cuda=True, vllm_installed=True, gpu_gib=80)
    from backend.engine.memory import estimate, job_from_settings, vllm_need_gib
    need = vllm_need_gib(job_from_settings(settings, "Qwen/Qwen2.5-VL-3B-Instruct", qlora=False,
                                           generation="vllm", gpu_gib=80))
    assert need * 1.1 / 80 <= plan.vllm_gpu_memory_utilization <= need * 1.1 / 80 + 0.01
    from backend.jobs.training import grpo_config_kwargs
    kwargs = grpo_config_kwargs(settings, Path("/o"), "cuda", plan, vllm_available=True)
    assert kwargs["vllm_gpu_memory_utilization"] == plan.vllm_gpu_memory_utilization
    assert plan.estimate_gib == round(estimate(job_from_settings(
        settings, "Qwen/Qwen2.5-VL-3B-Instruct", qlora=False, generation="vllm", gpu_gib=80)).total_gib, 1)


def test_auto_is_hf_without_vllm_on_cpu_or_with_qlora():
    assert "use_vllm" not in job_config(_tiny(), "cuda", vllm_available=False)
    assert "use_vllm" not in job_config(_tiny(qlora=True), "cuda", vllm_available=True)
    assert plan_run(_tiny(), None, cuda=False, vllm_installed=True).backend == "hf"
    assert plan_run(_tiny(generation_backend="hf"), None, cuda=True, vllm_installed=True).backend == "hf"


def test_vllm_trains_a_bf16_base_and_refuses_qlora():
    def plan(settings, **kw):
        return plan_run(settings, None, **{"cuda": True, "vllm_installed": False, **kw})
    # QLoRA left to the machine (None), no estimate: 4-bit with HF generate, bf16 LoRA with vLLM or ZeRO-3.
    assert plan(_tiny()).qlora is True
    assert plan(_tiny(), vllm_installed=True).qlora is False
    assert plan(_tiny(num_gpus=2, distributed="zero3")).qlora is False
    assert plan(_tiny(), cuda=False).qlora is False
    with pytest.raises(ValueError, match=r"^generation backend 'vllm' cannot train a 4-bit \(QLoRA\) base"):
        job_config(_tiny(generation_backend="vllm", qlora=True), "cuda", vllm_available=True)
    with pytest.raises(ValueError, match=r"^generation backend 'vllm' needs a CUDA GPU and the vllm package"):
        job_config(_tiny(generation_backend="vllm"), "cpu", vllm_available=True)


def test_compiled_generation_is_a_static_cache_on_cuda_only():
    kwargs = job_config(_tiny(compile_generation=True, generation_backend="hf"), "cuda", vllm_available=True)
    assert kwargs["cache_implementation"] == "static" and "use_vllm" not in kwargs
    with pytest.raises(ValueError, match=r"^compile_generation compiles HF generate on a CUDA GPU"):
        job_config(_tiny(compile_generation=True), "cpu", vllm_available=False)
    with pytest.raises(ValueError, match=r"^compile_generation compiles HF generate on a CUDA GPU"):
        job_config(_tiny(compile_generation=True, generation_backend="vllm", qlora=False), "cuda",
                   vllm_available=True)


def test_compile_hook_lifts_what_trls_trainer_sets(ws, tmp_path):
    """TRL 1.16's GRPOTrainer builds its GenerationConfig with disable_compile=True; with compile_generation the
    job's trainer has it lifted and a static cache asked for (checked on a real trainer, built on the CPU)."""
    from backend.data.catalog import get_dataset
    from backend.engine import grpo
    from backend.engine.models import load, lora_config
    from backend.engine.run_plan import RunPlan
    from backend.jobs.training import train_rows
    ensure_demo_dataset(ws.store, ws.data_dir, n=10)
    loaded = load("demo", for_training=True)
    settings = _tiny()
    settings.reward_weights = [1.0] * len(settings.rewards)  # as create_run stores them
    rows = train_rows(get_dataset(ws.store, "demo-shapes"), ws.data_dir, loaded.family.name, settings)
    plain = grpo.grpo_config_kwargs(settings, tmp_path / "a", "cpu", RunPlan("hf", False), vllm_available=False)

    def trainer(kwargs):
        return grpo.build_trainer(loaded, kwargs, rows, settings, [], grpo.RolloutRecorder(settings),
                                  lora_config(loaded.family, 4, 8), "hf")
    assert trainer(plain).generation_config.disable_compile is True  # TRL's own choice
    settings.compile_generation = True  # what grpo_config_kwargs gives on CUDA, built here on the CPU
    compiled = trainer({**plain, "cache_implementation": "static"})
    assert compiled.generation_config.disable_compile is False
    assert compiled.generation_config.cache_implementation == "static"


def test_presized_images_are_left_as_they_are_by_the_processor(tmp_path):
    """The vLLM guard (TRL #6401): each training image is copied at the size the processor feeds it, so the
    processor (and vLLM's, with the same rule) resizes it no further and both expand it to the same tokens."""
    from PIL import Image

    from backend.engine import grpo
    from backend.engine.demo.builder import build_tiny
    from backend.engine.model_input import fed_size, image_view
    from backend.engine.models import load_processor
    build_tiny("qwen2_5_vl", tmp_path / "tiny")  # laid out like the published checkpoint, the family's limits
    processor, family = load_processor(str(tmp_path / "tiny"))
    rows = []
    for i, size in enumerate([(4032, 3024), (3024, 4032), (640, 480), (333, 1001)]):
        path = tmp_path / f"photo{i}.jpg"
        Image.new("RGB", size, (10 * i, 80, 160)).save(path)
        rows += [{"image": str(path), "n": i}, {"image": str(path), "n": i}]  # two prompts of one image
    out = grpo.presized(rows, tmp_path / "presized", processor)
    assert [r["n"] for r in out] == [r["n"] for r in rows]
    assert len({r["image"] for r in out}) == 4  # one copy per image, shared by its prompts
    for before, after in zip(rows, out):
        with Image.open(before["image"]) as a, Image.open(after["image"]) as b:
            want = image_view(processor, family.name, a.size).input
            assert b.size == tuple(want)
            assert fed_size(processor, b) == tuple(want) == fed_size(processor, a)  # the library's resize agrees
    # The demo's processor holds min = max pixels: its resize of an input-sized image moves it again, so the
    # original is kept there (both engines then resize the same original with the same limits).
    demo, _ = load_processor("demo")
    kept = grpo.presized(rows[:1], tmp_path / "demo", demo)
    assert kept[0]["image"] == rows[0]["image"]


def test_evaluation_without_a_vllm_engine_uses_hf_generate():
    from backend.jobs.training import Processes, vllm_generate
    assert vllm_generate(SimpleNamespace(), processor=None) is None  # a trainer without TRL's vllm_generation
    one = Processes()
    assert (one.rank, one.count, one.main) == (0, 1, True)
    fn = lambda items, n: ["x"] * len(items)  # noqa: E731
    assert one.share(fn) is fn and one.agree("yes") == "yes"


def test_heldout_evaluation_takes_a_generate_function(ws):
    from backend.data.catalog import get_dataset
    from backend.engine.heldout import evaluate
    from backend.engine.model_input import image_view
    from backend.engine.models import load_processor
    ensure_demo_dataset(ws.store, ws.data_dir, n=10)
    dataset = get_dataset(ws.store, "demo-shapes")
    processor, family = load_processor("demo")
    loaded = SimpleNamespace(family=family, view=lambda size: image_view(processor, family.name, size))
    calls = []

    def fake(items, max_new_tokens):
        calls.append((len(items), max_new_tokens))
        assert all(hasattr(im, "size") and isinstance(p, str) for im, p in items)
        return ["<think>no</think><answer>No Objects</answer>"] * len(items)

    val = [s for s in dataset["samples"] if s["split"] == "val"]
    result = evaluate(loaded, ws.data_dir, dataset, val, TrainSettings().task_settings(), 7, max_examples=5,
                      generate_fn=fake)
    assert calls == [(5, 7)] and result["count"] == 5 and result["format_rate"] == 1.0


# ------------------------------------------------------------------ what runs create refuses

def test_settings_problems_are_one_sentence_each():
    has_nothing = lambda package: False  # noqa: E731
    has_all = lambda package: True  # noqa: E731
    vllm = _tiny(generation_backend="vllm")
    assert settings_problem(vllm, 0, has_all) == (
        "generation backend 'vllm' needs a CUDA GPU and this machine has none; use 'hf' or 'auto'")
    assert settings_problem(vllm, 1, has_nothing).startswith("generation backend 'vllm' needs the vllm package")
    assert settings_problem(_tiny(generation_backend="vllm", qlora=True), 1, has_all).startswith(
        "generation backend 'vllm' cannot train a 4-bit (QLoRA) base")
    assert settings_problem(vllm, 1, has_all) is None
    assert settings_problem(_tiny(generation_backend="fast"), 1, has_all).startswith("generation backend must be")
    assert settings_problem(_tiny(compile_generation=True), 0, has_all) == (
        "compile_generation compiles HF generate on a CUDA GPU; turn it off here: this machine has none")
    assert settings_problem(_tiny(compile_generation=True), 1, has_all) is None
    assert settings_problem(_tiny(use_liger_kernel=True), 0, has_all).startswith("use_liger_kernel needs a CUDA GPU")
    assert settings_problem(_tiny(num_gpus=4), 2, has_all) == (
        "this run asks for 4 GPUs and this machine has 2; a worker only takes a run when it has that many GPUs free")
    assert settings_problem(_tiny(num_gpus=2, distributed="zero3"), 2, has_nothing) == (
        "distributed 'zero3' needs the deepspeed package, which is not installed here")
    assert settings_problem(_tiny(num_gpus=2, distributed="zero3", qlora=True), 2, has_all).startswith(
        "distributed 'zero3' shards bf16 weights")
    assert settings_problem(_tiny(num_gpus=2, distributed="zero1"), 2, has_all).startswith("distributed must be")
    assert settings_problem(_tiny(num_gpus=2), 2, has_nothing) is None  # ddp needs nothing more
    assert settings_problem(_tiny(), 0, has_nothing) is None  # the CPU demo


def test_runs_create_refuses_vllm_on_this_cpu_machine(tmp_path):
    data = tmp_path / "data"
    run_cli("demo", data_dir=data)
    bad = run_cli("runs", "create", "--dataset", "demo-shapes", "--model", "demo", "--generation-backend", "vllm",
                  data_dir=data, check=False)
    assert bad.returncode == 1
    assert bad.stderr == ("error: generation backend 'vllm' needs a CUDA GPU and this machine has none; "
                          "use 'hf' or 'auto'\n")
    ok = json.loads(run_cli("runs", "create", "--dataset", "demo-shapes", "--model", "demo", "--generation-backend",
                            "hf", "--json", data_dir=data).stdout)
    shown = json.loads(run_cli("runs", "show", str(ok["id"]), "--json", data_dir=data).stdout)
    assert shown["settings"]["generation_backend"] == "hf" and shown["settings"]["num_gpus"] == 1


# ------------------------------------------------------------------ GPUs, slots, launch commands

def test_visible_gpus_and_the_gpus_flag():
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": "2,3"}) == ["2", "3"]
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": ""}) == []
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": "-1"}) == []
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": "GPU-8a1f,1"}) == ["GPU-8a1f", "1"]
    assert parse_gpus("0,1") == ["0", "1"] and parse_gpus("none") == []
    with pytest.raises(ValueError, match="each once"):
        parse_gpus("0,0")


def test_one_gpu_job_is_the_plain_job_command():
    assert launch_command(_tiny(), ["3"], "/d", 7, "py") == ["py", "-m", "backend.jobs.training", "--data-dir", "/d",
                                                             "--run", "7"]


def test_multi_gpu_commands_are_accelerate_launch_with_valid_flags(tmp_path):
    from accelerate.commands.config.config_args import load_config_from_file
    from accelerate.commands.launch import launch_command_parser

    ddp = launch_command(_tiny(num_gpus=2), ["0", "1"], "/d", 1234, "py")
    assert ddp[:4] == ["py", "-m", "accelerate.commands.accelerate_cli", "launch"]
    assert ddp[-6:] == ["-m", "backend.jobs.training", "--data-dir", "/d", "--run", "1234"]
    args = launch_command_parser().parse_args(ddp[4:])  # accelerate 1.15's own parser reads every flag
    assert (args.num_processes, args.gpu_ids, args.multi_gpu, args.main_process_port) == (2, "0,1", True, 29734)
    assert args.module and args.training_script == "backend.jobs.training"

    settings = _tiny(num_gpus=4, distributed="zero3")
    config = tmp_path / "accelerate.yaml"
    config.write_text(accelerate_config(settings))
    zero3 = launch_command(settings, ["0", "1", "2", "3"], "/d", 5, "py", config)
    args = launch_command_parser().parse_args(zero3[4:])
    assert args.config_file == str(config) and not args.multi_gpu and args.num_processes == 4
    loaded = load_config_from_file(str(config))
    assert loaded.distributed_type == "DEEPSPEED" and loaded.deepspeed_config["zero_stage"] == 3
    assert loaded.deepspeed_config["zero3_save_16bit_model"] is True and loaded.mixed_precision == "bf16"
    settings.distributed = "zero2"
    assert load_config_from_file(_write(tmp_path / "z2.yaml", accelerate_config(settings))).deepspeed_config[
        "zero_stage"] == 2
    with pytest.raises(ValueError, match="trains on 2 GPUs; 1 given"):
        launch_command(_tiny(num_gpus=2), ["0"], "/d", 1, "py")


def _write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


def test_a_multi_gpu_run_waits_for_enough_free_slots(ws, monkeypatch):
    from backend.jobs.leases import claim
    ensure_demo_dataset(ws.store, ws.data_dir, n=10)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")  # runs create checks this machine has the GPUs
    two = create_run(ws.store, "demo-shapes", "demo", _tiny(num_gpus=2))
    one = create_run(ws.store, "demo-shapes", "demo", _tiny())
    assert claim(ws, "one-gpu-worker", 60, free=1, total=1) == one  # it can never run `two`: leaves it
    three = create_run(ws.store, "demo-shapes", "demo", _tiny())
    assert claim(ws, "busy", 60, free=1, total=2) is None  # `two` is oldest: wait rather than starve it
    assert claim(ws, "idle", 60, free=2, total=2) == two
    assert claim(ws, "idle", 60, free=0, total=2) is None
    assert claim(ws, "idle", 60, free=1, total=2) == three


def test_slots_start_their_jobs_on_their_own_gpu(ws):
    from backend.jobs.worker import make_slots
    slots = make_slots(ws, "standby", ["0", "3"])
    assert [(s.gpu, s.starter.env, s.job) for s in slots] == [("0", {"CUDA_VISIBLE_DEVICES": "0"}, None),
                                                             ("3", {"CUDA_VISIBLE_DEVICES": "3"}, None)]
    (cpu,) = make_slots(ws, "standby", [])
    assert cpu.gpu is None and cpu.starter.env is None  # the CPU path, as before


def _metric_rows(ws, run_id):
    from storage.models import MetricPoint
    with ws.store.read() as s:
        return [(m.step, m.name) for m in s.query(MetricPoint).filter_by(run_id=run_id)]


def test_worker_runs_one_job_per_gpu_at_once(ws, monkeypatch):
    """Two GPU slots (ids that name no GPU here, so the jobs train on the CPU), two queued runs: both run at
    once, each job seeing only its slot's GPU."""
    from backend.jobs.worker import work
    ensure_demo_dataset(ws.store, ws.data_dir, n=10)
    runs = [create_run(ws.store, "demo-shapes", "demo", _tiny(max_steps=1, save_steps=1)) for _ in range(2)]
    monkeypatch.setenv("VRFT_JOB_START", "spawn")
    assert work(ws, once=True, lease_seconds=10, gpus=["3", "5"], poll=0.2) == 2
    shown = [run_json(ws.store, r) for r in runs]
    assert [r["status"] for r in shown] == ["completed", "completed"], [r["error"] for r in shown]
    first, second = shown
    assert first["started_at"] < second["finished_at"] and second["started_at"] < first["finished_at"]  # at once
    logs = [(ws.data_dir / f"runs/{r}/train.log").read_text() for r in runs]
    assert sorted(next(g for g in ("3", "5") if f"on GPU {g} ---" in log) for log in logs) == ["3", "5"]
    for log in logs:
        gpu = "3" if "on GPU 3 ---" in log else "5"
        assert re.search(rf"^training demo .*CUDA_VISIBLE_DEVICES={gpu}\)", log, re.M)  # the job saw only its GPU


def test_a_two_gpu_run_trains_as_two_processes_and_only_the_main_one_writes(ws, monkeypatch):
    """`accelerate launch --multi_gpu --num_processes 2` as the worker builds it; on this CPU machine the two
    processes train with gloo. Every metric step is stored once with the main process's value, and the
    rollouts, evaluations and checkpoints of one process only."""
    from backend.jobs.worker import work
    from storage.models import Checkpoint, Evaluation
    ensure_demo_dataset(ws.store, ws.data_dir, n=10)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    run_id = create_run(ws.store, "demo-shapes", "demo", _tiny(num_gpus=2))
    monkeypatch.setenv("VRFT_JOB_START", "spawn")
    assert work(ws, once=True, lease_seconds=10, gpus=["0", "1"], poll=0.2) == 1
    run = run_json(ws.store, run_id)
    log = (ws.data_dir / f"runs/{run_id}/train.log").read_text()
    assert run["status"] == "completed", (run["error"], log[-3000:])
    assert "accelerate.commands.accelerate_cli launch --num_processes 2" in log and "--multi_gpu" in log
    training_lines = [line for line in log.splitlines() if line.startswith("training demo")]
    assert len(training_lines) == 1 and "2 processes, ddp" in training_lines[0]  # printed by the main process

    rows = _metric_rows(ws, run_id)
    assert len(rows) == len(set(rows))
    for name, points in run["metrics"].items():
        assert [p[0] for p in points] == [1, 2], name  # every step exactly once
    logged = [float(m.group(1)) for m in re.finditer(r"^step \d+/\d+: reward (-?[\d.]+)", log, re.M)]
    assert logged == pytest.approx([p[1] for p in run["metrics"]["reward"]],
                                   abs=6e-4)  # the main process's values, as its step lines print them (3 places)
    stored = rollouts(ws.store, run_id)
    per_step = {step: sum(r.step == step for r in stored) for step in {r.step for r in stored}}
    assert per_step and max(per_step.values()) <= 2  # one process's completions (1 prompt x 2), not both's
    with ws.store.read() as s:
        assert sorted(e.phase for e in s.query(Evaluation).filter_by(run_id=run_id)) == ["after", "before"]
        # the held-out point half-way (a 2-step run's curve) keeps its checkpoint, and the last step
        assert [c.step for c in s.query(Checkpoint).filter_by(run_id=run_id)] == [1, 2]
    assert (ws.data_dir / f"runs/{run_id}/adapter/adapter_config.json").is_file()


def test_the_callback_writes_nothing_outside_the_main_process(ws):
    """The guard itself: a non-main process's callback stores no metric, rollout, progress or checkpoint."""
    from backend.jobs.training import RolloutRecorder
    from backend.jobs.training_callbacks import make_callback
    from storage.models import Checkpoint
    ensure_demo_dataset(ws.store, ws.data_dir, n=10)
    run_id = create_run(ws.store, "demo-shapes", "demo", _tiny())
    recorder = RolloutRecorder()
    recorder.batch = {"completions": ["<think>a</think><answer>[]</answer>"], "rewards": {"format": [1.0]},
                      "kwargs": {"solution": [json.dumps({"boxes": []})], "sample_id": [None],
                                 "image_rel": ["x.png"], "prompt_text": ["p"]}}
    out = ws.data_dir / "runs" / str(run_id) / "checkpoints"
    callback = make_callback(ws, run_id, _tiny(), recorder, out)
    args = SimpleNamespace(world_size=1)
    control = SimpleNamespace(should_training_stop=False, should_save=False)
    for zero in (False, True):
        state = SimpleNamespace(global_step=1, is_world_process_zero=zero)
        callback.on_log(args, state, control, logs={"reward": 0.5})
        callback.on_step_end(args, state, control)
        (out / "checkpoint-1").mkdir(parents=True, exist_ok=True)
        callback.on_save(args, state, control)
        with ws.store.read() as s:
            checkpoints = s.query(Checkpoint).filter_by(run_id=run_id).count()
        written = (len(_metric_rows(ws, run_id)), len(rollouts(ws.store, run_id)), run_json(ws.store, run_id)["step"],
                   checkpoints)
        assert written == ((2, 1, 1, 1) if zero else (0, 0, 0, 0)), zero  # reward + step_time, one rollout


# The job record (host, boot id, start time) and who may kill its job: tests/test_worker.py.


# ------------------------------------------------------------------ answers: the engine training used

def test_answers_come_from_vllm_only_on_cuda_with_vllm_installed(monkeypatch):
    import importlib.util

    from backend.engine.vllm_answers import ENGINE_ENV, answer_engine, lora_rank_limit
    has_vllm = importlib.util.find_spec("vllm") is not None
    assert answer_engine("cpu") == "hf"
    assert answer_engine("cuda") == ("vllm" if has_vllm else "hf")
    monkeypatch.setenv(ENGINE_ENV, "hf")
    assert answer_engine("cuda") == "hf"
    monkeypatch.setenv(ENGINE_ENV, "fast")
    with pytest.raises(ValueError, match="^VRFT_ANSWER_ENGINE must be 'auto' or 'hf', not 'fast'$"):
        answer_engine("cuda")
    assert [lora_rank_limit(r) for r in (4, 8, 16, 17, 64, 300)] == [8, 8, 16, 32, 64, 320]


def test_one_answering_engine_at_a_time_the_previous_closed_before_the_next_is_made():
    """vLLM frees an engine's GPU memory only when asked (or collected): switching base models or adapter ranks on
    the Test tab must close the old engine before the new one reserves its share. vLLM cannot run here, so the
    engines are stand-ins that record the order; the cache is the app's."""
    from backend.engine.vllm_answers import OneEngine
    made, closed = [], []

    class Engine:
        def __init__(self, key):
            self.key = key

        def close(self):
            closed.append(self.key)

    def make(*key):
        assert len(made) == len(closed), "a new engine was made while the old one still held the GPU"
        made.append(key)
        return "loaded", Engine(key)

    one = OneEngine(make)
    first = one("demo", None, None, 8)
    assert one("demo", None, None, 8) is first and made == [("demo", None, None, 8)] and not closed
    one("demo", None, None, 16)
    one("other", None, None, 16)
    assert closed == [("demo", None, None, 8), ("demo", None, None, 16)] and len(made) == 3
