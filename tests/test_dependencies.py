"""The GPU extra (vLLM, liger-kernel) resolves against requirements.txt's pins without moving one: asked of pip's
own resolver (`pip install --dry-run`, nothing installed), as `pip install -r requirements.txt -r
requirements-gpu.txt` would install it on a GPU machine."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def pins(path: Path) -> dict[str, str]:
    """name -> version of every `name==version` / `name===version` line (extras dropped)."""
    out = {}
    for line in path.read_text().splitlines():
        m = re.match(r"^([A-Za-z0-9_.\-]+)(?:\[[^\]]*\])?\s*===?\s*([^\s;#]+)", line.strip())
        if m:
            out[re.sub(r"[-_.]+", "-", m.group(1)).lower()] = m.group(2)
    return out


def test_gpu_extra_resolves_against_the_pins(tmp_path):
    report = tmp_path / "report.json"
    done = subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
                           "--report", str(report), "-r", str(ROOT / "requirements.txt"),
                           "-r", str(ROOT / "requirements-gpu.txt")],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    resolved = {re.sub(r"[-_.]+", "-", i["metadata"]["name"]).lower(): i["metadata"]["version"]
                for i in json.loads(report.read_text())["install"]}
    wanted = {**pins(ROOT / "requirements.txt"), **pins(ROOT / "requirements-gpu.txt")}
    assert "vllm" in wanted and "torch" in wanted
    moved = {name: (version, resolved.get(name)) for name, version in wanted.items()
             if resolved.get(name, "").split("+")[0] != version}
    assert moved == {}  # pinned -> resolved


def test_trl_supports_the_pinned_vllm():
    """TRL warns outside its vLLM range (is_vllm_available: `Version("0.22.0") <= v <= Version("0.31.0")`):
    the pin lies inside it."""
    import trl.import_utils as iu
    from packaging.version import Version
    source = Path(iu.__file__).read_text()
    low, high = re.search(r'Version\("([\d.]+)"\) <= _vllm_base_version <= Version\("([\d.]+)"\)', source).groups()
    assert Version(low) <= Version(pins(ROOT / "requirements-gpu.txt")["vllm"]) <= Version(high)
