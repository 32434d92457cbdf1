"""The Compare view's data-efficiency part: the runs of a dataset grouped by method and shots (seeds averaged, base
and novel classes apart) as one table, and one plot of the held-out metric against shots, a line per method."""
from __future__ import annotations

import gradio as gr
import numpy as np
import pandas as pd

from backend.jobs.compare import efficiency_table

EMPTY = pd.DataFrame({"shots": np.array([], dtype=int), "value": np.array([], dtype=float), "series": []})


def efficiency_parts(table: dict | None) -> tuple[str, pd.DataFrame, dict]:
    """(a note, the grouped table, the plot's update) of compare()'s result; without completed runs an empty
    table and a hidden plot."""
    if not table or not table["efficiency"]["groups"]:
        return ("", pd.DataFrame(columns=["method", "shots", "runs"]), gr.update(value=EMPTY, visible=False))
    eff = table["efficiency"]
    headers, rows = efficiency_table(eff, table["task"])
    points = eff["points"]
    frame = pd.DataFrame({"shots": np.array([p["shots"] for p in points], dtype=int),
                          "value": np.array([p["value"] for p in points], dtype=float),
                          "series": [p["series"] for p in points]})
    note = (f"**Data efficiency:** runs grouped by method and shots, mean ± sd over their seeds; 'all' = every "
            f"training image (the most any class has: {eff['all_x']}, where the plot draws it). "
            + ("Novel classes were never in a training prompt: the novel columns are how the model does on "
               "classes it never trained on. " if any(g["novel_classes"] for g in eff["groups"]) else "")
            + f"The plot: held-out {eff['metric']} against shots, 0 = before training.")
    return (note, pd.DataFrame(rows, columns=headers),
            gr.update(value=frame, visible=True, x_lim=[0, max([eff["all_x"], *(p["shots"] for p in points)])],
                      y_title=eff["metric"], colors_in_legend=sorted({p["series"] for p in points})))
