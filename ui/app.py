"""The page: tabs wired together. No torch import on this path, so the page starts in seconds."""
from __future__ import annotations

import gradio as gr

from backend.workspace import Workspace
from ui.data_tab import create_data_tab
from ui.playground_tab import create_playground_tab


def build_app(ws: Workspace) -> gr.Blocks:
    with gr.Blocks(title="Visual-RFT Studio") as app:
        gr.Markdown("## Visual-RFT Studio\nReinforcement fine-tuning of vision-language models with verifiable "
                    "rewards, on a hundred images.")
        with gr.Tabs():
            data = create_data_tab(ws)
            create_playground_tab()
        # The page re-reads storage on load: a reload shows what another process changed.
        for fn, inputs, outputs in (data["load"],):
            app.load(fn, inputs, outputs, api_visibility="private")
    return app
