"""A training step's few key metrics, formatted: one line per step in the job's log, and the Runs tab's table of
the latest step (instead of a dict of every value the trainer logs)."""
from __future__ import annotations

KEY_METRICS = {"reward": "reward", "kl": "KL", "completions/mean_length": "completion length",
               "frac_reward_zero_std": "groups without signal", "loss": "loss",
               "mean_token_accuracy": "token accuracy", "learning_rate": "learning rate", "step_time": "step time"}
"""Metric -> label, in the order shown; each reward function's mean (rewards/NAME/mean) follows the total."""


def _value(name: str, value: float) -> str:
    if name == "step_time":
        return f"{value:.1f} s"
    if name == "completions/mean_length":
        return f"{value:.0f} tokens"
    if name == "learning_rate":
        return f"{value:.2g}"
    if name == "frac_reward_zero_std":
        return f"{100 * value:.0f}%"
    return f"{value:.4f}" if abs(value) < 0.01 and value != 0 else f"{value:.3f}"


def step_rows(values: dict) -> list[list[str]]:
    """[[label, formatted value]] of a step's key metrics present in `values` (name -> number)."""
    rows = []
    for name, label in KEY_METRICS.items():
        if name in values:
            rows.append([label, _value(name, values[name])])
        if name == "reward":
            rows += [[f"  {key.split('/')[1]}", _value(key, v)] for key, v in sorted(values.items())
                     if key.startswith("rewards/") and key.endswith("/mean")]
    return rows


def step_line(step: int, max_steps: int, values: dict) -> str:
    """One log line: 'step 3/12 · reward 0.412 (iou 0.310, format 1.000) · KL 0.0012 · ... · step time 4.1 s'."""
    parts = []
    for label, value in step_rows(values):
        if label.startswith("  "):
            continue
        if label == "reward":
            each = [f"{lab.strip()} {val}" for lab, val in step_rows(values) if lab.startswith("  ")]
            value += f" ({', '.join(each)})" if each else ""
        parts.append(f"{label} {value}")
    return f"step {step}/{max_steps}: " + " · ".join(parts) if parts else f"step {step}/{max_steps}"
