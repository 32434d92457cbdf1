"""The Label tab: a tuned run (or a base model) labels a batch of unlabelled images through the worker
(backend.jobs.label_queue); the person reviews the boxes in a gallery, filtered by class and confidence, accepts or
rejects each image, adds the accepted ones to a dataset as training images and exports them (COCO, YOLO, ...)."""
from __future__ import annotations

import html
import shutil
from pathlib import Path

import gradio as gr

from backend.data.additions import add_to_dataset
from backend.data.catalog import list_datasets
from backend.data.exporter import page_export_folder, write_export
from backend.data.workspace import Workspace
from backend.data.writers import WRITERS
from backend.data.writers.files import listing
from backend.jobs import label_queue
from backend.jobs.labelling import Source, classes_from_text
from backend.jobs.runs import list_runs
from PIL import Image, ImageDraw, ImageFont

from backend.scoring.draw import PREDICTION, draw_file
from ui.uploads import IMAGES_OR_ZIP, UploadFiles, accept_uploads

ALL = "all classes"
NEW = "a new dataset"


def export_note(count: int, fmt: str, out: Path) -> str:
    """What an export wrote, every file named, escaped for Markdown ('instances_<split>.json' is no HTML tag)."""
    return html.escape(f"Exported {count} accepted images as {fmt} ({WRITERS[fmt].describe}): "
                       + ", ".join(listing(out)), quote=False)


def run_choices(ws: Workspace) -> list[tuple[str, str]]:
    return [("base model only", "")] + [
        (f"run {r['id']} · {r['model']} · {r['status']}", str(r["id"])) for r in list_runs(ws.store)
        if r["task"] == "detection" and r["status"] in ("completed", "cancelled", "running")]


def job_choices(ws: Workspace) -> list[tuple[str, str]]:
    return [(f"job {j['id']} · {j['answered']}/{j['total']} · {j['status']}", str(j["id"])) for j in label_queue.jobs(ws)]


def start(ws: Workspace, run: str | None, model: str, paths: list[str] | None, classes: str, min_conf: float,
          on_cpu: bool) -> int:
    """Queue a labelling job for the worker; its id."""
    if not paths:
        raise ValueError("upload images or a zip of images to label")
    uploads = accept_uploads(paths, IMAGES_OR_ZIP)  # files this page received, never a server folder
    source = Source(int(run) if run else None, None if run else (model or "").strip(), classes_from_text(classes),
                    float(min_conf or 0.0))
    return label_queue.submit(ws, source, [Path(p) for p in uploads], on_cpu=bool(on_cpu),
                              names=[u.shown for u in uploads])


def status_text(state: dict) -> str:
    line = f"Job {state['id']}: **{state['status']}**, {state['answered']} of {state['total']} images labelled"
    if state["status"] in ("queued", "running") and state["eta_seconds"] is not None:
        line += f" · {state['seconds_per_image']:.1f} s an image, about {state['eta_seconds']:.0f} s left"
    if state["error"]:
        line += f"\n\n⚠ {state['error']}"
    return line


def counts_text(items: list[dict]) -> str:
    accepted = sum(i["review"] == "accepted" for i in items)
    rejected = sum(i["review"] == "rejected" for i in items)
    return (f"**{accepted} accepted · {rejected} rejected · {len(items) - accepted - rejected} to review** "
            f"(of {len(items)} labelled). On each picture its review (a green frame and ACCEPTED, greyed out and "
            "REJECTED, or an amber TO REVIEW) and the model's boxes in red with their confidence.")


REVIEW_LOOK = {"accepted": ((22, 163, 74), "ACCEPTED"), "rejected": ((55, 65, 81), "REJECTED"),
               None: ((217, 119, 6), "TO REVIEW")}
"""Each review's colour and word on its gallery tile (not red: the predicted boxes are)."""


def with_review(image: Image.Image, review: str | None) -> Image.Image:
    """The tile of a labelled image: its review in a corner tag, an accepted one framed in green, a rejected one
    greyed out, so the gallery shows where the review stands without reading a caption."""
    color, word = REVIEW_LOOK[review]
    if review == "rejected":
        image = Image.blend(image.convert("RGB"), Image.new("RGB", image.size, (255, 255, 255)), 0.55)
    draw = ImageDraw.Draw(image)
    if review == "accepted":
        draw.rectangle([0, 0, image.width - 1, image.height - 1], outline=color, width=max(4, image.width // 80))
    font = ImageFont.load_default(size=max(12, round(max(image.size) / 26)))
    left, top, right, bottom = draw.textbbox((0, 0), word, font=font)
    pad = max(3, (bottom - top) // 3)
    draw.rectangle([0, 0, right - left + 2 * pad, bottom - top + 2 * pad], fill=color)
    draw.text((pad - left, pad - top), word, fill=(255, 255, 255), font=font)
    return image


def shown(items: list[dict], cls: str, min_conf: float) -> list[dict]:
    """The labelled images the filters let through, each with only the boxes that pass (rejected boxes never do):
    with a class chosen, images holding a box of it at or above the confidence; with all classes, every image."""
    out = []
    for i in items:
        boxes = [b for b in label_queue.kept_boxes(i)
                 if b[5] >= (min_conf or 0.0) and (cls in (None, "", ALL) or b[4] == cls)]
        if boxes or cls in (None, "", ALL):
            out.append({**i, "boxes": boxes})
    return out


def gallery_items(ws: Workspace, items: list[dict]) -> list:
    marks = {"accepted": "accepted", "rejected": "rejected", None: "to review"}
    return [(with_review(draw_file(ws.data_dir / i["image"], [([[*b[:4], f"{b[4]} {b[5]:.2f}"] for b in i["boxes"]],
                                                               PREDICTION)], max_side=480), i["review"]),
             f"#{i['position']} · {Path(i['name']).name} · {len(i['boxes'])} boxes · {marks[i['review']]}")
            for i in items]


def create_label_tab(ws: Workspace) -> dict:
    with gr.Tab("Label", id="label") as tab:
        with gr.Row():
            with gr.Column(scale=1):
                run = gr.Dropdown([], label="Tuned run (its best checkpoint)", elem_id="label-run")
                model = gr.Textbox("demo", label="…or a base model (when no run is chosen)")
                files = UploadFiles(file_count="multiple", label="Unlabelled images, or a zip of them",
                                    file_types=sorted(IMAGES_OR_ZIP), elem_id="label-images")
                classes = gr.Textbox(label="Classes", placeholder="default: the run's dataset's", elem_id="label-classes",
                                     info='comma-separated; a JSON list for names that hold a comma: ["a, b", "c"]')
                min_conf = gr.Slider(0, 1, 0, step=0.05, label="Keep boxes from confidence")
                on_cpu = gr.Checkbox(False, label="Label on the CPU")
                go = gr.Button("Label images", variant="primary", elem_id="label-start")
                job = gr.Dropdown([], label="Labelling job", elem_id="label-job")
                # The job open in this browser, kept across reloads (the page itself holds no state); a fixed key
                # (a job id is no secret) so that it outlives a restart of the page too.
                open_job = gr.BrowserState("", storage_key="vrft-label-job", secret="vrft-label-job")
                status = gr.Markdown(elem_id="label-status")
                cancel = gr.Button("Cancel labelling", size="sm", elem_id="label-cancel")
            with gr.Column(scale=2):
                with gr.Row():
                    cls = gr.Dropdown([ALL], value=ALL, label="Show class", elem_id="label-filter-class")
                    conf = gr.Slider(0, 1, 0, step=0.05, label="Show boxes from confidence", elem_id="label-filter-conf")
                counts = gr.Markdown(elem_id="label-counts")
                # No label over the pictures: it would cover the first one's review tag (the counts line says it).
                gallery = gr.Gallery(label="Predicted boxes (red) with their confidence", show_label=False,
                                     columns=3, height=520, object_fit="contain", elem_id="label-gallery")
                with gr.Row():
                    picked = gr.Dropdown([], label="Image", elem_id="label-picked")
                    accept = gr.Button("Accept", variant="primary", elem_id="label-accept")
                    reject = gr.Button("Reject", variant="stop", elem_id="label-reject")
                boxes = gr.CheckboxGroup([], label="Boxes of this image: untick a wrong one to reject it",
                                         elem_id="label-boxes")
                with gr.Row():
                    target = gr.Dropdown([NEW], value=NEW, label="Add accepted images to", elem_id="label-target")
                    new_name = gr.Textbox(label="New dataset's name", elem_id="label-new-name")
                    add = gr.Button("Add accepted to dataset", elem_id="label-add")
                with gr.Row():
                    fmt = gr.Radio(list(WRITERS), value="coco", label="Export accepted as", elem_id="label-format")
                    export = gr.Button("Export accepted", elem_id="label-export")
                message = gr.Markdown(elem_id="label-message")
                download = gr.File(label="Export", elem_id="label-download")
        timer = gr.Timer(1.0)

    def view(job_id, c, k, pick=None):
        """Status, counts, gallery and the image picker of a job, as storage has them."""
        if not job_id:
            return "", "", [], gr.update(choices=[], value=None), gr.update()
        state = label_queue.progress(ws, int(job_id))
        items = label_queue.items(ws, int(job_id))
        visible = shown(items, c, k)
        labels = sorted({b[4] for i in items for b in i["boxes"]})
        choices = [(f"#{i['position']} {Path(i['name']).name}", str(i["position"])) for i in visible]
        values = [v for _, v in choices]
        if pick not in values:
            pick = next((str(i["position"]) for i in visible if i["review"] is None), values[0] if values else None)
        return (status_text(state), counts_text(items), gallery_items(ws, visible),
                gr.update(choices=choices, value=pick), gr.update(choices=[ALL, *labels]))

    outs = [status, counts, gallery, picked, cls]

    def box_choices(job_id, pick):
        """The picked image's boxes as ticked choices (ticked = kept)."""
        if not job_id or pick in (None, ""):
            return gr.update(choices=[], value=[])
        item = next((i for i in label_queue.items(ws, int(job_id)) if str(i["position"]) == str(pick)), None)
        if item is None:
            return gr.update(choices=[], value=[])
        choices = [(f"{n + 1}: {b[4]} {b[5]:.2f}", str(n)) for n, b in enumerate(item["boxes"])]
        return gr.update(choices=choices, value=[v for _, v in choices if int(v) not in item["rejected_boxes"]])

    def on_boxes(job_id, pick, kept, c, k):
        if job_id and pick not in (None, ""):
            item = next(i for i in label_queue.items(ws, int(job_id)) if str(i["position"]) == str(pick))
            label_queue.reject_boxes(ws, int(job_id), int(pick),
                                     [n for n in range(len(item["boxes"])) if str(n) not in (kept or [])])
        return view(job_id, c, k, pick)

    picked.change(box_choices, [job, picked], [boxes], show_progress="hidden")
    boxes.input(on_boxes, [job, picked, boxes, cls, conf], outs, show_progress="hidden")

    def on_go(r, m, f, c, k, cpu):
        try:
            job_id = start(ws, r, m, f, c, k, cpu)
        except ValueError as e:
            return (gr.update(), f"⚠ {e}")
        return gr.update(choices=job_choices(ws), value=str(job_id)), ""

    go.click(on_go, [run, model, files, classes, min_conf, on_cpu], [job, message], api_name="label")
    job.change(view, [job, cls, conf], outs, show_progress="hidden")
    for control in (cls, conf):
        control.change(view, [job, cls, conf, picked], outs, show_progress="hidden")

    def on_tick(job_id, c, k, pick):
        """The job's progress while it labels (the job picker's counts too); the last view once it has ended, then
        the timer rests."""
        if not job_id:
            return (gr.update(),) * len(outs) + (gr.Timer(active=False), gr.update())
        active = label_queue.progress(ws, int(job_id))["status"] in ("queued", "running", "preparing")
        return (*view(job_id, c, k, pick), gr.Timer(active=active),
                gr.update(choices=job_choices(ws), value=job_id))

    timer.tick(on_tick, [job, cls, conf, picked], [*outs, timer, job], show_progress="hidden",
               api_visibility="private")
    job.change(lambda j: gr.Timer(active=bool(j)), [job], [timer], api_visibility="private")

    def on_cancel(job_id):
        if job_id:
            label_queue.cancel(ws, int(job_id))
        return status_text(label_queue.progress(ws, int(job_id))) if job_id else ""

    cancel.click(on_cancel, [job], [status], api_visibility="private")

    def decide(decision):
        def fn(job_id, pick, c, k):
            if job_id and pick is not None:
                label_queue.review(ws, int(job_id), [int(pick)], decision)
            return view(job_id, c, k, None)
        return fn

    accept.click(decide("accepted"), [job, picked, cls, conf], outs, show_progress="hidden")
    reject.click(decide("rejected"), [job, picked, cls, conf], outs, show_progress="hidden")

    def on_select(evt: gr.SelectData, job_id, c, k):
        visible = shown(label_queue.items(ws, int(job_id)), c, k) if job_id else []
        return gr.update(value=str(visible[evt.index]["position"])) if evt.index < len(visible) else gr.update()

    gallery.select(on_select, [job, cls, conf], [picked], show_progress="hidden")

    def on_add(job_id, where, name):
        try:
            if not job_id:
                raise ValueError("choose a labelling job")
            images = label_queue.accepted_set(ws, int(job_id)).images
            new = where == NEW
            target_name = (name or "").strip() if new else where
            n = add_to_dataset(ws.store, ws.data_dir, target_name, images, new=new)
        except ValueError as e:
            return f"⚠ {e}", gr.update()
        names = [d["name"] for d in list_datasets(ws.store) if d["task"] == "detection"]
        return (f"Added {n} accepted image{'s' if n != 1 else ''} to dataset '{target_name}' as training images",
                gr.update(choices=[NEW, *names], value=target_name))

    add.click(on_add, [job, target, new_name], [message, target], api_visibility="private")

    def on_export(job_id, f):
        """The zip is written in a folder of its own in the data dir and handed to Gradio's cache (which serves it
        and sweeps it), then our folder goes: nothing of ours is left (a page killed meanwhile: the next export or
        start removes it, backend.data.exporter.PAGE_EXPORTS)."""
        folder = None
        try:
            if not job_id:
                raise ValueError("choose a labelling job")
            export_set = label_queue.accepted_set(ws, int(job_id))
            folder = page_export_folder(ws.data_dir)
            out = write_export(export_set, f, folder / f"labelling-{job_id}-{f}.zip")
            note = export_note(len(export_set.images), f, out)
            cached = download.move_resource_to_block_cache(out)
        except ValueError as e:
            return f"⚠ {e}", None
        finally:
            if folder is not None:
                shutil.rmtree(folder, ignore_errors=True)
        return note, cached

    export.click(on_export, [job, fmt], [message, download], api_visibility="private")

    def on_refresh(current, kept):
        """The runs, jobs and datasets as storage has them; the job this browser had open (`kept`) chosen again
        after a reload while it exists."""
        names = [d["name"] for d in list_datasets(ws.store) if d["task"] == "detection"]
        jobs = job_choices(ws)
        reopen = not current and kept and str(kept) in [value for _, value in jobs]
        return (gr.update(choices=run_choices(ws)),
                gr.update(choices=jobs, value=str(kept)) if reopen else gr.update(choices=jobs),
                gr.update(choices=[NEW, *names]))

    job.change(lambda j: j or "", [job], [open_job], api_visibility="private", show_progress="hidden")
    refresh = (on_refresh, [job, open_job], [run, job, target])
    tab.select(*refresh, api_visibility="private", show_progress="hidden")
    return {"refresh": refresh}
