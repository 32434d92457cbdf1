"""The data-efficiency view: completed runs on one dataset grouped by method and shots, seeds averaged, base and
novel classes apart, as one table and one plot (the CLI's `compare` and the Runs tab's Compare view)."""
from __future__ import annotations

import json

import pytest

from backend.data.demo.dataset import ensure_demo_dataset
from backend.engine.settings import preset
from backend.jobs.compare import compare, efficiency_table
from backend.jobs.run_history import save_evaluation
from backend.jobs.runs import create_run
from storage.models import Run
from tests.conftest import run_cli

NOVEL = ["blue circle", "blue square", "blue triangle"]


def _done(ws, after: dict, before: dict, **settings) -> int:
    """A completed run with these settings and evaluations (as its job would have stored them)."""
    run_id = create_run(ws.store, "demo-shapes", "demo", preset("CPU demo", max_steps=4, **settings))
    with ws.store.write() as s:
        run = s.get(Run, run_id)
        run.status, run.step = "completed", 4
    save_evaluation(ws.store, run_id, "before", before)
    save_evaluation(ws.store, run_id, "after", after)
    return run_id


def _scores(base: float, novel: float) -> dict:
    return {"mean_iou": (base + novel) / 2, "map": base / 2, "ap50": base,
            "base": {"mean_iou": base, "map": base / 2, "ap50": base},
            "novel": {"mean_iou": novel, "map": novel / 2, "ap50": novel}}


@pytest.fixture
def runs(ws):
    ensure_demo_dataset(ws.store, ws.data_dir)
    start = _scores(0.2, 0.1)
    made = {
        ("grpo", 2, 0): _done(ws, _scores(0.4, 0.2), start, shots=2, seed=0, novel_classes=NOVEL),
        ("grpo", 2, 1): _done(ws, _scores(0.6, 0.3), start, shots=2, seed=1, novel_classes=NOVEL),
        ("grpo", 4, 0): _done(ws, _scores(0.7, 0.35), start, shots=4, seed=0, novel_classes=NOVEL),
        ("sft", 2, 0): _done(ws, _scores(0.3, 0.1), start, shots=2, seed=0, method="sft", novel_classes=NOVEL),
        ("sft", None, 0): _done(ws, _scores(0.5, 0.05), start, seed=0, method="sft", novel_classes=NOVEL),
    }
    return ws, made


def test_runs_group_by_method_and_shots_with_base_and_novel_apart(runs):
    ws, made = runs
    eff = compare(ws.store, "demo-shapes")["efficiency"]
    assert eff["metric"] == "mean_iou" and eff["all_x"] >= 4
    groups = {(g["method"], g["shots"]): g for g in eff["groups"]}
    assert list(groups) == [("GRPO", 2), ("GRPO", 4), ("SFT", 2), ("SFT", None)]
    two = groups[("GRPO", 2)]
    assert two["runs"] == [made[("grpo", 2, 0)], made[("grpo", 2, 1)]] and two["seeds"] == [0, 1]
    assert two["after"]["base mean_iou"]["mean"] == pytest.approx(0.5)
    assert two["after"]["novel mean_iou"]["mean"] == pytest.approx(0.25)
    assert two["after"]["base mean_iou"]["sd"] == pytest.approx(0.1414, abs=1e-3)
    assert two["after"]["novel map"]["mean"] == pytest.approx(0.125)
    assert two["novel_classes"] == NOVEL
    assert 0 < two["images"] < groups[("GRPO", 4)]["images"] < groups[("SFT", None)]["images"]

    lines = {}
    for p in eff["points"]:
        lines.setdefault(p["series"], []).append((p["shots"], round(p["value"], 4)))
    all_x = eff["all_x"]
    assert lines == {"GRPO (base classes)": [(0, 0.2), (2, 0.5), (4, 0.7)],
                     "GRPO (novel classes)": [(0, 0.1), (2, 0.25), (4, 0.35)],
                     "SFT (base classes)": [(0, 0.2), (2, 0.3), (all_x, 0.5)],
                     "SFT (novel classes)": [(0, 0.1), (2, 0.1), (all_x, 0.05)]}

    headers, rows = efficiency_table(eff, "detection")
    assert headers[:6] == ["method", "shots", "novel classes", "runs", "images", "boxes"]
    assert {"base mean_iou", "novel mean_iou", "base map", "novel map", "base ap50", "novel ap50",
            "novel mean_iou at start"} <= set(headers)
    first = dict(zip(headers, rows[0]))
    assert first["base mean_iou"] == "0.500 ± 0.141" and first["novel mean_iou"] == "0.250 ± 0.071"
    assert first["novel classes"] == ", ".join(NOVEL) and first["shots"] == "2"
    assert dict(zip(headers, rows[-1]))["shots"] == f"all ({all_x})"


def test_the_plot_can_show_another_metric_and_an_unknown_one_is_a_sentence(runs):
    ws, _ = runs
    eff = compare(ws.store, "demo-shapes", "map")["efficiency"]
    assert {(p["series"], p["shots"], round(p["value"], 3)) for p in eff["points"]} >= {("GRPO (base classes)", 2, 0.25)}
    with pytest.raises(ValueError, match="unknown metric 'accuracy' for detection"):
        compare(ws.store, "demo-shapes", "accuracy")


def test_compare_from_the_cli_prints_the_table_and_the_plot(runs):
    ws, made = runs
    out = run_cli("compare", "--dataset", "demo-shapes", data_dir=ws.data_dir).stdout
    assert "data efficiency: completed runs by method and shots" in out
    assert "base mean_iou" in out and "novel mean_iou" in out
    assert "GRPO (novel classes): 0→0.100  2→0.250  4→0.350" in out
    table = json.loads(run_cli("compare", "--dataset", "demo-shapes", "--json", data_dir=ws.data_dir).stdout)
    assert [g["shots"] for g in table["efficiency"]["groups"]] == [2, 4, 2, None]
    bad = run_cli("compare", "--dataset", "demo-shapes", "--metric", "bogus", data_dir=ws.data_dir, check=False)
    assert bad.returncode == 1 and bad.stderr.strip().startswith("error: unknown metric 'bogus'")
