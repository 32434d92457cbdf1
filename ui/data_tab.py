"""The Data tab: upload a dataset, see its counts, its images with boxes drawn, and any problems."""
from __future__ import annotations

import json
import re
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

PAGE_SIZE = 48
"""Images a page of the preview shows; Previous / Next page through the rest of the split."""
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


def suggest_name(ws: Workspace, paths: list[str]) -> str:
    """A new dataset's name from the uploaded file's ('cones.v1i.yolov8.zip' -> 'cones.v1i.yolov8'): the zip's, else
    the first annotation file's, else the first file's; made a valid name that no dataset has yet."""
    names = [getattr(p, "orig_name", None) or Path(p).name for p in paths]
    zips = [n for n in names if n.lower().endswith(".zip")]
    notes = [n for n in names if Path(n).suffix.lower() in ANNOTATION_SUFFIXES]
    chosen = Path((zips or notes or names or ["dataset"])[0].replace("\\", "/")).name
    stem = chosen[:-4] if chosen.lower().endswith(".zip") else Path(chosen).stem
    base = re.sub(r"[^A-Za-z0-9_.-]+", "-", stem).lstrip("_.-")[:58].rstrip("_.-") or "dataset"
    taken, name, n = set(dataset_names(ws.store)), base, 2
    while name in taken:
        name, n = f"{base}-{n}", n + 1
    return name


def page_line(shown: int, first: int, total: int, split: str, page: int, pages: int) -> str:
    """'Images 1–48 of 70 (every split) · page 1 of 2': where the preview stands in the split."""
    where = "every split" if split == "all" else f"the {split} split"
    if not total:
        return f"No images in {where}."
    return (f"Images {first + 1}–{first + shown} of {total} ({where})"
            + (f" · page {page} of {pages}: Next ▶ shows the next {min(PAGE_SIZE, total - first - shown)}"
               if page < pages else (f" · page {page} of {pages}" if pages > 1 else "")))


def dataset_view(ws: Workspace, name: str | None, split: str = "all", page=1) -> tuple[str, list, list, str, int]:
    """Summary markdown, per-class count rows, the gallery items of page `page` of the split's images, the line
    saying which of them are shown, and the page shown (a page past the last shows the last)."""
    if not name:
        return "No dataset selected yet: upload one on the left.", [], [], "", 1
    try:
        info = get_dataset(ws.store, name)
    except ImportProblem as e:  # deleted meanwhile (another tab, the command line)
        return f"⚠ {e}", [], [], "", 1
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
    chosen = [s for s in info["samples"] if split == "all" or s["split"] == split]
    pages = max(1, -(-len(chosen) // PAGE_SIZE))
    page = min(max(1, int(page or 1)), pages)
    first = (page - 1) * PAGE_SIZE
    gallery = []
    for s in chosen[first:first + PAGE_SIZE]:
        boxes = s.get("boxes") or ([[*s["box"], s["expression"]]] if "box" in s else [])
        caption = s.get("label") or s.get("expression") or f"{len(boxes)} boxes"
        gallery.append((draw_file(image_path(ws.data_dir, info, s), [(boxes, TRUTH)], max_side=384),
                        f"{s['file']} · {s['split']} · {caption}"))
    return "\n".join(md), rows, gallery, page_line(len(gallery), first, len(chosen), split, page, pages), page


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
                name = gr.Textbox(label="Dataset name", placeholder="my-dataset", elem_id="data-name",
                                  info="filled in from the uploaded file's name; change it as you like")
                # The name the last upload suggested ({"new", "old"}): the page puts it in the box unless the person
                # typed another (decided in the browser, so a name typed while the upload was sent is kept).
                suggested = gr.Textbox(visible=False, elem_id="data-name-suggested")
                last_suggestion = gr.State("")
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
                pager = gr.Markdown(elem_id="dataset-pager")
                with gr.Row(elem_id="dataset-pager-row"):
                    previous = gr.Button("◀ Previous", size="sm", min_width=110, elem_id="dataset-previous")
                    following = gr.Button("Next ▶", size="sm", min_width=110, elem_id="dataset-next")
                page = gr.State(1)  # the preview's page, per browser session

    def on_upload(paths, last):
        """The task guessed and the name suggested from the files uploaded (the import decides for sure)."""
        try:
            paths = accept_uploads(paths, DATASET_FILES)
        except ValueError:  # the import says why
            return gr.update(), gr.update(), last
        new = suggest_name(ws, paths) if paths else ""
        return gr.update(value=suggest_task(paths)), json.dumps({"new": new, "old": last}), new

    def on_import(paths, ds_name, task_choice, fraction, hub_name=None):
        """Import the upload (or the Hub dataset named); every outcome is one sentence. The uploaded files leave
        gradio's cache once imported or refused (a refused name keeps them, to try again with another)."""
        unchanged = (gr.update(),) * 7
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
            return f"⚠ {e}", *(gr.update(),) * 6, None
        except Exception as e:  # noqa: BLE001 - a bug, still shown as a sentence (the traceback goes to the log)
            traceback.print_exc(file=sys.stderr)
            return f"⚠ The import failed unexpectedly ({type(e).__name__}: {e}); nothing was imported.", \
                *(gr.update(),) * 6, None
        finally:
            discard_uploads(paths)
        note = get_dataset(ws.store, ds_name, with_samples=False)["split_note"]
        return (f"✓ Imported **{ds_name}** ({note}).", gr.update(choices=dataset_names(ws.store), value=ds_name),
                *dataset_view(ws, ds_name), None)

    def on_pick(ds_name, which, at=1):
        return dataset_view(ws, ds_name, which, at)

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
        return note, gr.update(choices=names, value=current), *dataset_view(ws, current)

    def on_refresh(current, which):
        """The dataset list as storage has it now (the page holds no state); the current choice is kept while
        it exists, else the newest dataset is shown."""
        names = dataset_names(ws.store)
        if current in names:
            return gr.update(choices=names), *(gr.update(),) * 5
        current = names[-1] if names else None
        return (gr.update(choices=names, value=current), *dataset_view(ws, current, which))

    files.upload(on_upload, [files, last_suggestion], [task, suggested, last_suggestion],
                 api_visibility="private").then(
        None, [suggested, name], name, api_visibility="private",
        js="(said, typed) => { const s = JSON.parse(said || '{}'); return (!typed || typed === s.old) && s.new ? "
           "s.new : typed; }")
    view = [summary, counts, gallery, pager, page]
    imported = import_btn.click(on_import, [files, name, task, val_fraction, hub], [status, picker, *view, files],
                                api_name="import_dataset")
    picker.change(on_pick, [picker, split], view, api_visibility="private")
    split.change(on_pick, [picker, split], view, api_visibility="private")
    for button, step in ((previous, -1), (following, 1)):
        button.click(lambda ds_name, which, at, step=step: on_pick(ds_name, which, at + step), [picker, split, page],
                     view, api_visibility="private")
    deleted = delete_btn.click(on_delete, picker, [message, picker, *view], api_name="delete_dataset",
                               js="(name) => (name && confirm(`Delete dataset ${name} and its images?`)) ? name : null")
    refresh = (on_refresh, [picker, split], [picker, *view])
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
