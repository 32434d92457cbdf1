"""The Data tab: upload a dataset, see its counts, its images with boxes drawn, and any problems."""
from __future__ import annotations

import zipfile
from pathlib import Path

import gradio as gr

from backend.datasets import ImportProblem, delete_dataset, get_dataset, image_path, import_dataset
from backend.datasets.catalog import dataset_names
from backend.datasets.safety import ANNOTATION_SUFFIXES, IMAGE_SUFFIXES
from backend.workspace import Workspace
from backend.draw import TRUTH, draw_boxes

GALLERY_LIMIT = 48
AUTO = "auto"


def suggest_task(paths: list[str] | None) -> str:
    """A first guess of the task from the uploaded file names (the import decides for sure)."""
    names: list[str] = []
    for p in paths or []:
        if zipfile.is_zipfile(p):
            with zipfile.ZipFile(p) as zf:
                names += zf.namelist()[:20000]
        else:
            names.append(Path(p).name)
    suffixes = {Path(n).suffix.lower() for n in names}
    if ".jsonl" in suffixes:
        return "grounding"
    if suffixes & {".json", ".xml", ".txt", ".yaml", ".yml"}:
        return "detection"
    if ".csv" in suffixes or any(len(Path(n).parts) >= 2 for n in names if Path(n).suffix.lower() in IMAGE_SUFFIXES):
        return "classification"
    return AUTO


def dataset_view(ws: Workspace, name: str | None, split: str = "all") -> tuple[str, list, list]:
    """Summary markdown, per-class count rows and gallery items for one dataset."""
    if not name:
        return "No dataset selected yet: upload one on the left.", [], []
    info = get_dataset(ws.store, name)
    c = info["counts"]
    unit = "boxes" if info["task"] == "detection" else "images"
    md = [f"### {info['name']}",
          f"**{info['task']}** from **{info['format']}** · {c['total']} images · {c['train']} train · "
          f"{c['val']} held out · {len(info['classes'])} classes (counts below are {unit})"]
    md += [f"- ⚠ {w}" for w in info["warnings"]]
    rows = [[cls, n["train"], n["val"], n["train"] + n["val"]] for cls, n in info["per_class"].items()]
    gallery = []
    for s in [s for s in info["samples"] if split == "all" or s["split"] == split][:GALLERY_LIMIT]:
        boxes = s.get("boxes") or ([[*s["box"], s["expression"]]] if "box" in s else [])
        caption = s.get("label") or s.get("expression") or f"{len(boxes)} boxes"
        gallery.append((draw_boxes(image_path(ws.data_dir, info, s), [(boxes, TRUTH)], max_side=384),
                        f"{s['file']} · {s['split']} · {caption}"))
    return "\n".join(md), rows, gallery


def create_data_tab(ws: Workspace) -> dict:
    with gr.Tab("Data", id="data"):
        with gr.Row():
            with gr.Column(scale=1, min_width=320):
                gr.Markdown("Upload a **zip** (or images with their annotation files): COCO JSON, YOLO, "
                            "Pascal VOC, Label Studio JSON, one folder per class, CSV `image,label`, or JSONL "
                            "referring expressions.")
                files = gr.File(label="Upload", file_count="multiple", elem_id="data-upload",
                                file_types=[".zip", *sorted(IMAGE_SUFFIXES | ANNOTATION_SUFFIXES)])
                name = gr.Textbox(label="Dataset name", placeholder="my-dataset")
                task = gr.Dropdown([AUTO, "detection", "classification", "grounding"], value=AUTO, label="Task")
                val_fraction = gr.Slider(0.0, 0.5, value=0.2, step=0.05, label="Held-out fraction")
                import_btn = gr.Button("Import", variant="primary")
                status = gr.Markdown(elem_id="import-status")
            with gr.Column(scale=2):
                with gr.Row():
                    picker = gr.Dropdown([], label="Dataset", scale=3, allow_custom_value=True)
                    split = gr.Radio(["all", "train", "val"], value="all", label="Split", scale=2)
                    delete_btn = gr.Button("Delete", variant="stop", scale=1, size="sm")
                summary = gr.Markdown(elem_id="dataset-summary")
                counts = gr.Dataframe(headers=["class", "train", "val", "total"], label="Per class",
                                      interactive=False)
                gallery = gr.Gallery(label="Images with their annotations", columns=4, height=560,
                                     object_fit="contain", elem_id="dataset-gallery")

    def on_upload(paths):
        return gr.update(value=suggest_task(paths))

    def on_import(paths, ds_name, task_choice, fraction):
        unchanged = (gr.update(),) * 5
        if not paths:
            return "⚠ Choose a zip or files to upload first.", *unchanged
        try:
            import_dataset(ws.store, ws.data_dir, [Path(p) for p in paths], (ds_name or "").strip(),
                           task=None if task_choice == AUTO else task_choice, val_fraction=float(fraction),
                           source_names=[Path(p).name for p in paths])
        except ImportProblem as e:
            return f"⚠ {e}", *unchanged
        md, rows, items = dataset_view(ws, ds_name.strip())
        return (f"✓ Imported **{ds_name.strip()}**.", gr.update(choices=dataset_names(ws.store), value=ds_name.strip()),
                md, rows, items, None)

    def on_pick(ds_name, which):
        return dataset_view(ws, ds_name, which)

    def on_delete(ds_name):
        if ds_name:
            delete_dataset(ws.store, ws.data_dir, ds_name)
        names = dataset_names(ws.store)
        md, rows, items = dataset_view(ws, names[-1] if names else None)
        return gr.update(choices=names, value=names[-1] if names else None), md, rows, items

    files.upload(on_upload, files, task, api_visibility="private")
    import_btn.click(on_import, [files, name, task, val_fraction], [status, picker, summary, counts, gallery, files],
                     api_name="import_dataset")
    picker.change(on_pick, [picker, split], [summary, counts, gallery], api_visibility="private")
    split.change(on_pick, [picker, split], [summary, counts, gallery], api_visibility="private")
    delete_btn.click(on_delete, picker, [picker, summary, counts, gallery], api_name="delete_dataset",
                     js="(name) => (name && confirm(`Delete dataset ${name} and its images?`)) ? name : null")
    def on_load(which):
        """The page holds no state: on every load, the dataset list comes from storage."""
        names = dataset_names(ws.store)
        current = names[-1] if names else None
        return (gr.update(choices=names, value=current), *dataset_view(ws, current, which))

    return {"load": (on_load, [split], [picker, summary, counts, gallery])}
