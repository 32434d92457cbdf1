"""Taking a run elsewhere: `export` says how to load and serve the adapter, and `--trl-script` writes the run as
a plain TRL script that trains outside the app (run here for real, from its own folder, without the project)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.conftest import run_cli
from tests.tuned import tuned_demo_run


def test_export_prints_how_to_load_and_serve_and_the_trl_script_trains(ws, tmp_path):
    run_id = tuned_demo_run(ws)
    done = run_cli("export", "--run", str(run_id), "--out", str(tmp_path / "adapter"), "--trl-script",
                   str(tmp_path / "trl"), data_dir=ws.data_dir)
    lines = done.stdout.splitlines()
    assert lines[0] == f"exported adapter to {tmp_path / 'adapter'}"
    assert "peft.PeftModel.from_pretrained(model, " in lines[1]
    assert f"--enable-lora --max-lora-rank 64 --lora-modules tuned={tmp_path / 'adapter'}" in lines[2]
    assert lines[3] == f"TRL script: python {tmp_path / 'trl' / 'train_trl.py'}"
    rows = [json.loads(x) for x in (tmp_path / "trl" / "train_rows.jsonl").read_text().splitlines()]
    assert rows and all((tmp_path / "trl" / r["image"]).is_file() for r in rows)
    script = (tmp_path / "trl" / "train_trl.py").read_text()
    assert "'max_steps': 1" in script and "'learning_rate': 0.0005" in script
    # Outside the app: its own folder, the project not on the path.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    trained = subprocess.run([sys.executable, "train_trl.py"], cwd=tmp_path / "trl", env=env, capture_output=True,
                             text=True, timeout=900)
    assert trained.returncode == 0, trained.stderr[-3000:]
    assert (tmp_path / "trl" / "adapter" / "adapter_config.json").is_file()
    assert "'reward'" in trained.stdout + trained.stderr  # TRL's own step log


def test_the_trl_script_is_for_grpo_runs_and_a_used_folder_is_refused(ws, tmp_path):
    run_id = tuned_demo_run(ws)
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "x").write_text("x")
    bad = run_cli("export", "--run", str(run_id), "--out", str(tmp_path / "a"), "--trl-script", str(tmp_path / "used"),
                  data_dir=ws.data_dir, check=False)
    assert bad.returncode == 1 and bad.stderr.strip() == f"error: {tmp_path / 'used'} is not empty"
    assert not (tmp_path / "a").exists()  # nothing half-written
