"""The Data tab: upload a dataset, see its counts, its images with boxes drawn, and any problems."""
from __future__ import annotations

import sys
import traceback
import zipfile
from pathlib import Path

import gradio as gr

from backend.data.catalog import delete_dataset, get_dataset, image_path
from backend.data.catalog import dataset_names
from backend.data.importer import import_dataset
from backend.data.importer import check_new_name
from backend.data.safety import ImportProblem
from backend.data.safety import ANNOTATION_SUFFIXES, IMAGE_SUFFIXES
from backend.data.workspace import Workspace
from backend.scoring.draw import TRUTH, draw_file
from ui.uploads import DATASET_FILES, UploadFiles, accept_uploads

GALLERY_LIMIT = 48
AUTO = "auto"


def suggest_task(paths: list[str] | None) -> str:
    """A first guess of the task from the uploaded file names (the import decides for sure)."""
    names: list[str] = []
    for p in paths or []:
        try:
            if zipfile.is_zipfile(p):
                with zipfile.ZipFile(p) as zf:
                    names += zf.namelist()[:20000]
                continue
        except (zipfile.BadZipFile, OSError, ValueError):
            pass  # the import says what is wrong with it
        names.append(Path(p).name)
    suffixes = {Path(n).suffix.lower() for n in names}
    if ".jsonl" in suffixes:
        return "grounding"
    if suffixes & {".json", ".csv"}:  # boxes or classes (Label Studio, VIA, CSV): the import reads which
        return AUTO
    if suffixes & {".xml", ".txt", ".yaml", ".yml"}:
        return "detection"
    if any(len(Path(n).parts) >= 2 for n in names if Path(n).suffix.lower() in IMAGE_SUFFIXES):
        return "classification"
    return AUTO


def dataset_view(ws: Workspace, name: str | None, split: str = "all") -> tuple[str, list, list]:
    """Summary markdown, per-class count rows and gallery items for one dataset."""
    if not name:
        return "No dataset selected yet: upload one on the left.", [], []
    try:
        info = get_dataset(ws.store, name)
    except ImportProblem as e:  # deleted meanwhile (another tab, the command line)
        return f"⚠ {e}", [], []
    c = info["counts"]
    unit = "boxes" if info["task"] == "detection" else "images"
    held = " · ".join(f"{c[k]} {k}" for k in ("val", "test") if c[k]) or "nothing held out"
    md = [f"### {info['name']}",
          f"**{info['task']}** from **{info['format']}** · {c['total']} images · {c['train']} train · "
          f"{held} · {len(info['classes'])} classes (counts below are {unit})",
          f"\n**Split:** {info['split_note']}" + (" (held-out evaluation uses val; test is kept apart)"
                                                  if c["val"] and c["test"] else "")]
    md += [f"- ⚠ {w}" for w in info["warnings"]]
    rows = [[cls, n["train"], n["val"], n["test"], sum(n.values())] for cls, n in info["per_class"].items()]
    gallery = []
    for s in [s for s in info["samples"] if split == "all" or s["split"] == split][:GALLERY_LIMIT]:
        boxes = s.get("boxes") or ([[*s["box"], s["expression"]]] if "box" in s else [])
        caption = s.get("label") or s.get("expression") or f"{len(boxes)} boxes"
        gallery.append((draw_file(image_path(ws.data_dir, info, s), [(boxes, TRUTH)], max_side=384),
                        f"{s['file']} · {s['split']} · {caption}"))
    return "\n".join(md), rows, gallery


def create_data_tab(ws: Workspace) -> dict:
    with gr.Tab("Data", id="data") as tab:
        with gr.Row():
            with gr.Column(scale=1, min_width=320):
                gr.Markdown("Upload a **zip** as your labelling tool exported it (or images with their annotation "
                            "files): COCO JSON, YOLO / Ultralytics `data.yaml`, Pascal VOC, Label Studio JSON, "
                            "JSON-MIN or CSV, LabelMe, CreateML, VGG Image Annotator JSON or CSV, a Hugging Face "
                            "`datasets` folder, one folder per class, CSV `image,label` or one-hot, or JSONL referring "
                            "expressions. The export's own train / valid / test split is kept.")
                files = UploadFiles(label="Upload", file_count="multiple", elem_id="data-upload",
                                    file_types=[".zip", *sorted(IMAGE_SUFFIXES | ANNOTATION_SUFFIXES)])
                hub = gr.Textbox(label="…or a Hugging Face Hub dataset", placeholder="hf:NAME or hf:OWNER/NAME:CONFIG",
                                 elem_id="data-hub")
                name = gr.Textbox(label="Dataset name", placeholder="my-dataset")
                task = gr.Dropdown([AUTO, "detection", "classification", "grounding"], value=AUTO, label="Task")
                val_fraction = gr.Slider(0.0, 0.5, value=0.2, step=0.05, label="Held-out fraction",
                                         info="used only when the export has no train / valid / test split")
                import_btn = gr.Button("Import", variant="primary")
                status = gr.Markdown(elem_id="import-status")
            with gr.Column(scale=2):
                with gr.Row():
                    picker = gr.Dropdown([], label="Dataset", scale=3, allow_custom_value=True)
                    split = gr.Radio(["all", "train", "val", "test"], value="all", label="Split", scale=2)
                    delete_btn = gr.Button("Delete", variant="stop", scale=1, size="sm")
                message = gr.Markdown(elem_id="dataset-message")
                summary = gr.Markdown(elem_id="dataset-summary")
                counts = gr.Dataframe(headers=["class", "train", "val", "test", "total"], label="Per class",
                                      interactive=False)
                gallery = gr.Gallery(label="Images with their annotations", columns=4, height=560,
                                     object_fit="contain", elem_id="dataset-gallery")

    def on_upload(paths):
        try:
            return gr.update(value=suggest_task(accept_uploads(paths, DATASET_FILES)))
        except ValueError:  # the import says why
            return gr.update()

    def on_import(paths, ds_name, task_choice, fraction, hub_name=None):
        """Import the upload (or the Hub dataset named); every outcome is one sentence. The uploaded files leave
        gradio's cache once imported or refused (a refused name keeps them, to try again with another)."""
        unchanged = (gr.update(),) * 5
        hub_name = (hub_name or "").strip()
        if hub_name and not hub_name.startswith("hf:"):
            hub_name = f"hf:{hub_name}"
        if not paths and not hub_name:
            return "⚠ Choose a zip or files to upload first, or name a Hugging Face dataset.", *unchanged
        ds_name = (ds_name or "").strip()
        try:
            paths = accept_uploads(paths, DATASET_FILES)  # files this page received, never a server path
            check_new_name(ws.store, ds_name)
        except ImportProblem as e:
            return f"⚠ {e}", *unchanged
        try:
            paths = paths or []
            import_dataset(ws.store, ws.data_dir, [Path(p) for p in paths] + ([hub_name] if hub_name else []), ds_name,
                           task=None if task_choice == AUTO else task_choice, val_fraction=float(fraction),
                           source_names=[Path(p).name for p in paths] + ([hub_name] if hub_name else []))
        except ValueError as e:  # ImportProblem and every other sentence a person can act on
            return f"⚠ {e}", *(gr.update(),) * 4, None
        except Exception as e:  # noqa: BLE001 - a bug, still shown as a sentence (the traceback goes to the log)
            traceback.print_exc(file=sys.stderr)
            return f"⚠ The import failed unexpectedly ({type(e).__name__}: {e}); nothing was imported.", \
                *(gr.update(),) * 4, None
        finally:
            discard_uploads(paths)
        md, rows, items = dataset_view(ws, ds_name)
        note = get_dataset(ws.store, ds_name, with_samples=False)["split_note"]
        return (f"✓ Imported **{ds_name}** ({note}).", gr.update(choices=dataset_names(ws.store), value=ds_name),
                md, rows, items, None)

    def on_pick(ds_name, which):
        return dataset_view(ws, ds_name, which)

    def on_delete(ds_name):
        """Delete the dataset; refused (one sentence naming them) while queued or running runs use it."""
        note, current = "", None
        if ds_name:
            try:
                delete_dataset(ws.store, ws.data_dir, ds_name)
                note = f"✓ Deleted **{ds_name}**."
            except ValueError as e:
                note, current = f"⚠ {e}", ds_name
        names = dataset_names(ws.store)
        current = current if current in names else (names[-1] if names else None)
        md, rows, items = dataset_view(ws, current)
        return note, gr.update(choices=names, value=current), md, rows, items

    def on_refresh(current, which):
        """The dataset list as storage has it now (the page holds no state); the current choice is kept while
        it exists, else the newest dataset is shown."""
        names = dataset_names(ws.store)
        if current in names:
            return gr.update(choices=names), *(gr.update(),) * 3
        current = names[-1] if names else None
        return (gr.update(choices=names, value=current), *dataset_view(ws, current, which))

    files.upload(on_upload, files, task, api_visibility="private")
    imported = import_btn.click(on_import, [files, name, task, val_fraction, hub],
                                [status, picker, summary, counts, gallery, files], api_name="import_dataset")
    picker.change(on_pick, [picker, split], [summary, counts, gallery], api_visibility="private")
    split.change(on_pick, [picker, split], [summary, counts, gallery], api_visibility="private")
    deleted = delete_btn.click(on_delete, picker, [message, picker, summary, counts, gallery],
                               api_name="delete_dataset",
                               js="(name) => (name && confirm(`Delete dataset ${name} and its images?`)) ? name : null")
    refresh = (on_refresh, [picker, split], [picker, summary, counts, gallery])
    tab.select(*refresh, api_visibility="private", show_progress="hidden")
    return {"refresh": refresh, "changed": [imported, deleted],
            "import": on_import, "delete": on_delete, "pick": on_pick}


def discard_uploads(paths: list[str] | None) -> None:
    """Delete uploaded files from gradio's upload cache (GRADIO_TEMP_DIR, else TMPDIR/gradio), and the folder
    gradio made for each when it empties. Paths outside that cache are never touched."""
    from gradio.utils import get_upload_folder
    cache = Path(get_upload_folder()).resolve()
    for p in paths or []:
        path = Path(p)
        try:
            folder = path.parent.resolve()
        except OSError:
            continue
        if folder != cache and cache not in folder.parents:
            continue
        try:
            path.unlink()
        except OSError:
            continue
        if folder != cache:
            try:
                folder.rmdir()  # only when empty
            except OSError:
                pass
