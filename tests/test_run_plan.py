"""The run plan: on a GPU, `auto` takes the fastest weights + generation engine the memory estimate fits on the
card (vLLM with a bf16 base, then HF from bf16, then HF from 4-bit); what the settings fix is kept; the GPU
presets' notes say what each card gets, and say it truly."""
from __future__ import annotations

import inspect
import re

import pytest

from backend.engine import settings as settings_module
from backend.engine.memory import estimate, job_from_settings
from backend.engine.run_plan import plan_run
from backend.engine.settings import PRESET_CARD_GIB as GPU_PRESETS, preset

M3, M7 = "Qwen/Qwen2.5-VL-3B-Instruct", "Qwen/Qwen2.5-VL-7B-Instruct"
SAYS = {"QLoRA + HF generate": ("hf", True), "LoRA (bf16) + vLLM": ("vllm", False)}


def preset_notes() -> dict[tuple[int, str], tuple[str, bool]]:
    """(card GB, '7B'/'3B') -> (backend, qlora) as the comment above the GPU presets states it."""
    out = {}
    for gb, rest in re.findall(r"#\s+(\d+) GB: (.+)", inspect.getsource(settings_module)):
        for size, said in re.findall(r"(\dB) -> ([^;]+?)(?:;|$)", rest):
            out[(int(gb), size)] = SAYS[said.strip()]
    return out


def test_the_presets_notes_are_what_the_plan_chooses():
    notes = preset_notes()
    assert len(notes) == 6
    for (gb, size), said in notes.items():
        plan = plan_run(preset(f"{gb} GB GPU"), M7 if size == "7B" else M3, cuda=True, vllm_installed=True,
                        gpu_gib=gb)
        assert (plan.backend, plan.qlora) == said, (gb, size, plan.describe())


@pytest.mark.parametrize("name,gpu", GPU_PRESETS.items())
@pytest.mark.parametrize("vllm", [True, False])
def test_every_gpu_preset_plans_a_run_that_fits_its_card(name, gpu, vllm):
    settings = preset(name)
    assert settings.num_generations >= 4 and settings.qlora is None
    for model in (M7, M3):
        for image in [(1024, 768), (4000, 3000)]:  # a 1024x768 photo, and any larger one (capped by max_pixels)
            plan = plan_run(settings, model, cuda=True, vllm_installed=vllm, gpu_gib=gpu, image_size=image)
            assert plan.fits and plan.estimate_gib <= gpu * 0.95, plan.describe()
            assert vllm or plan.backend == "hf"


def test_auto_prefers_vllm_then_bf16_then_4bit_as_the_card_allows():
    settings = preset("24 GB GPU")
    on = lambda gpu, vllm=True, model=M7: plan_run(settings, model, cuda=True, vllm_installed=vllm,  # noqa: E731
                                                   gpu_gib=gpu)
    assert (on(80).backend, on(80).qlora) == ("vllm", False)
    assert (on(80, vllm=False).backend, on(80, vllm=False).qlora) == ("hf", False)
    assert (on(24).backend, on(24).qlora) == ("hf", True)  # 7B in bf16 does not fit 24 GB
    assert on(80).vllm_gpu_memory_utilization < 0.5  # sized from the estimate, not the whole card
    nothing = on(8)  # fits nowhere: the most frugal, which runs create refuses with advice
    assert (nothing.backend, nothing.qlora, nothing.fits) == ("hf", True, False)


def test_what_the_settings_fix_is_kept():
    fixed = preset("24 GB GPU", generation_backend="hf", qlora=False)
    plan = plan_run(fixed, M7, cuda=True, vllm_installed=True, gpu_gib=24)
    assert (plan.backend, plan.qlora, plan.fits) == ("hf", False, False)  # kept, though it does not fit
    four_bit = plan_run(preset("80 GB GPU", qlora=True), M7, cuda=True, vllm_installed=True, gpu_gib=80)
    assert (four_bit.backend, four_bit.qlora) == ("hf", True)


def test_vllm_share_holds_its_weights_and_cache():
    """vLLM colocated sleeps while the model trains: its share is a phase, and it must hold a bf16 copy of the
    model plus a step's KV cache; a share set too small does not fit, whatever the card's size."""
    settings = preset("80 GB GPU", generation_backend="vllm", qlora=False)
    job = job_from_settings(settings, M7, gpu_gib=80, generation="vllm", qlora=False)
    e = estimate(job)
    assert e.vllm_need_gib > 15.4  # the 7B's bf16 weights alone are ~15.4 GiB
    assert e.kv_cache_gib >= e.vllm_need_gib and e.fits(80)
    small = estimate(job_from_settings(settings, M7, gpu_gib=80, generation="vllm", qlora=False,
                                       vllm_gpu_memory_utilization=0.1))
    assert small.total_gib < 80 and not small.fits(80)
    from backend.engine.memory_advice import advice
    assert advice(small, 80)[0].startswith("vLLM's share (0.1 of the 80 GiB card) is smaller than the ")
