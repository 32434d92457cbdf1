"""The command line: every power of the page, headless, with --json for scripts."""
from __future__ import annotations

import argparse
import sys

from backend.data.config import data_dir as resolve_data_dir
from ui.cli_common import CliError
from ui.cli_data import (cmd_datasets_delete, cmd_datasets_export, cmd_datasets_import, cmd_datasets_list,
                         cmd_datasets_show, cmd_demo, cmd_score)
from ui.cli_label import add_label_parser
from ui.cli_runs import (cmd_compare, cmd_eval, cmd_export, cmd_models_check, cmd_models_list, cmd_predict,
                         cmd_runs_cancel, cmd_runs_create, cmd_runs_list, cmd_runs_logs, cmd_runs_show, cmd_worker)


def _setting_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per TrainSettings field (help from its docstring), except those the parser already has."""
    from dataclasses import fields

    from backend.engine.settings import CHOICES, TrainSettings, setting_help, setting_type
    helps = setting_help()
    for f in fields(TrainSettings):
        flag = "--" + f.name.replace("_", "-")
        if f.name in ("rewards", "reward_weights") or flag in parser._option_string_actions:
            continue
        kind = setting_type(f.name)
        extra: dict = {"action": argparse.BooleanOptionalAction} if kind is bool else {"type": kind}
        if kind is list:  # comma-separated names, or a JSON list for names that hold a comma
            extra = {"type": _comma_list, "metavar": "A,B"}
            helps[f.name] = helps.get(f.name, "") + ' (comma-separated, or a JSON list: \'["a, b", "c"]\')'
        if f.name in CHOICES:
            extra["choices"] = list(CHOICES[f.name])
        parser.add_argument(flag, dest=f.name, default=None, help=helps.get(f.name, "").replace("%", "%%"), **extra)


def _comma_list(text: str) -> list[str]:
    from backend.scoring.subsets import parse_class_list
    try:
        return parse_class_list(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def cmd_serve(args: argparse.Namespace) -> int:
    from ui.server import serve
    return serve(resolve_data_dir(args.data_dir), host=args.host, port=args.port, auth=args.auth, share=args.share,
                 insecure_no_auth=args.insecure_no_auth, forwarded_allow_ips=args.forwarded_allow_ips)


def build_parser() -> argparse.ArgumentParser:
    from backend.data.formats import FORMATS
    from backend.data.writers import WRITERS
    from backend.engine.settings import GENERATION_BACKENDS, PRESET_CARD_GIB, PRESETS
    from backend.scoring.families import FAMILIES
    from backend.scoring.tasks import TASKS

    p = argparse.ArgumentParser(prog="app.py", description="Visual-RFT Studio: reinforcement fine-tuning of "
                                "vision-language models with verifiable rewards.")
    p.add_argument("--data-dir", help="where datasets, runs and the database live (default $VRFT_DATA_DIR or ./data)")
    p.add_argument("--host", default="127.0.0.1", help="address to serve on (default 127.0.0.1: this machine only; "
                                                       "any other address needs --auth)")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--auth", help="USER:PASS to require a login (or $VRFT_AUTH)")
    p.add_argument("--insecure-no-auth", action="store_true",
                   help="serve on a non-loopback --host without a login (only behind a proxy that asks for one)")
    p.add_argument("--share", action="store_true", help="ask Gradio for a public share link (needs --auth)")
    p.add_argument("--forwarded-allow-ips", metavar="ADDRS",
                   help="comma-separated addresses or networks of the reverse proxies whose X-Forwarded-For is "
                        "believed (or $VRFT_FORWARDED_ALLOW_IPS); default: none, so a client's address (which the "
                        "login throttle counts) is the socket's peer")
    p.set_defaults(func=cmd_serve)
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    sub.add_parser("serve", help="serve the web app (the default)").set_defaults(func=cmd_serve)

    ds = sub.add_parser("datasets", help="import, export, list, show and delete datasets")
    dsub = ds.add_subparsers(dest="datasets_command", metavar="ACTION", required=True)
    imp = dsub.add_parser("import", help="import a zip or files as a dataset")
    imp.add_argument("paths", nargs="+", metavar="PATH",
                     help="a zip archive, a folder, images and annotation files, or hf:NAME[:CONFIG] (a Hugging Face "
                          "Hub dataset)")
    imp.add_argument("--name", required=True)
    imp.add_argument("--task", choices=list(TASKS), help="default: the format's task")
    imp.add_argument("--format", default="auto", choices=["auto", *FORMATS])
    imp.add_argument("--val-fraction", type=float, default=0.2,
                     help="share held out for evaluation, stratified, when the export has no train/valid/test split "
                          "of its own (default 0.2)")
    imp.add_argument("--json", action="store_true")
    imp.set_defaults(func=cmd_datasets_import)
    exp = dsub.add_parser("export", help="write a detection dataset as COCO, YOLO, Pascal VOC or Label Studio "
                                         "pre-annotations (original images, their pixels, the split kept)")
    exp.add_argument("name")
    exp.add_argument("--format", required=True, choices=list(WRITERS))
    exp.add_argument("--out", required=True, metavar="DIR", help="a new or empty folder; a zip when it ends in .zip")
    exp.add_argument("--json", action="store_true")
    exp.set_defaults(func=cmd_datasets_export)
    lst = dsub.add_parser("list", help="list datasets")
    lst.add_argument("--json", action="store_true")
    lst.set_defaults(func=cmd_datasets_list)
    show = dsub.add_parser("show", help="a dataset's summary and samples")
    show.add_argument("name")
    show.add_argument("--json", action="store_true")
    show.set_defaults(func=cmd_datasets_show)
    dele = dsub.add_parser("delete", help="delete a dataset and its images")
    dele.add_argument("name")
    dele.set_defaults(func=cmd_datasets_delete)

    runs = sub.add_parser("runs", help="create, list, show, cancel training runs")
    rsub = runs.add_subparsers(dest="runs_command", metavar="ACTION", required=True)
    cr = rsub.add_parser("create", help="queue a GRPO run")
    cr.add_argument("--dataset", required=True)
    cr.add_argument("--model", required=True, help="'demo', a hub id (`models list` shows the known checkpoints, "
                                                   "their sizes and memory) or a local folder")
    cr.add_argument("--preset", default="CPU demo", choices=list(PRESETS))
    cr.add_argument("--rewards", help="comma-separated reward names (default: the task's)")
    cr.add_argument("--reward-weights", help="comma-separated weights, one per reward")
    _pixel_flags(cr)
    _setting_flags(cr)  # every other setting, from TrainSettings
    cr.add_argument("--ignore-memory-estimate", action="store_true",
                    help="queue the run even when the memory estimate says it will not fit this machine's GPU")
    cr.add_argument("--json", action="store_true")
    cr.set_defaults(func=cmd_runs_create)
    rl = rsub.add_parser("list", help="list runs")
    rl.add_argument("--json", action="store_true")
    rl.set_defaults(func=cmd_runs_list)
    rs = rsub.add_parser("show", help="a run's status, metrics and evaluation")
    rs.add_argument("id", type=int)
    rs.add_argument("--json", action="store_true")
    rs.set_defaults(func=cmd_runs_show)
    rc = rsub.add_parser("cancel", help="stop a run at its next step (a checkpoint is saved)")
    rc.add_argument("id", type=int)
    rc.set_defaults(func=cmd_runs_cancel)
    rg = rsub.add_parser("logs", help="print a run's training log")
    rg.add_argument("id", type=int)
    rg.set_defaults(func=cmd_runs_logs)

    wk = sub.add_parser("worker", help="run queued jobs (serve starts one too)")
    wk.add_argument("--once", action="store_true", help="re-queue expired runs, run every queued run, then exit")
    wk.add_argument("--lease-seconds", type=int, default=60)
    wk.add_argument("--max-attempts", type=int, default=3,
                    help="a run whose job dies (killed, out of memory) this many times fails instead of being re-queued")
    wk.add_argument("--gpus", help="GPU ids to run jobs on, one job per GPU at once (like 0,1; 'none' for the CPU; "
                                   "default: CUDA_VISIBLE_DEVICES, else every GPU nvidia-smi lists)")
    wk.add_argument("--stop-seconds", type=float, default=60.0,
                    help="on SIGTERM or Ctrl-C, how long the jobs get to reach a step boundary and save a checkpoint "
                         "before they are killed (their runs are queued again either way; a second signal: at once)")
    wk.set_defaults(func=cmd_worker)

    dm = sub.add_parser("demo", help="register the demo dataset and check the demo model (idempotent)")
    dm.add_argument("--json", action="store_true")
    dm.set_defaults(func=cmd_demo)

    pr = sub.add_parser("predict", help="run a tuned (or base) model on one image")
    src = pr.add_mutually_exclusive_group(required=True)
    src.add_argument("--run", type=int)
    src.add_argument("--model")
    pr.add_argument("image")
    ask = pr.add_mutually_exclusive_group(required=True)
    ask.add_argument("--category", help="detect objects of this category")
    ask.add_argument("--question", help="ask for the box of this description, or a class")
    _checkpoint_flag(pr)
    pr.add_argument("--json", action="store_true")
    pr.set_defaults(func=cmd_predict)

    add_label_parser(sub)

    ev = sub.add_parser("eval", help="evaluate a run's adapter on its dataset's held-out split")
    ev.add_argument("--run", type=int, required=True)
    ev.add_argument("--split", choices=["val", "test"],
                    help="the held-out split to use (default: val, else the export's test)")
    _checkpoint_flag(ev)
    ev.add_argument("--json", action="store_true")
    ev.set_defaults(func=cmd_eval)

    ex = sub.add_parser("export", help="write a run's adapter, or the merged full-precision model")
    ex.add_argument("--run", type=int, required=True)
    ex.add_argument("--out", required=True)
    ex.add_argument("--merged", action="store_true")
    ex.add_argument("--trl-script", metavar="DIR", help="also write the run as a plain TRL script to DIR (its rows, "
                    "images, rewards, LoRA and GRPOConfig): `python DIR/train_trl.py` trains it outside the app")
    _checkpoint_flag(ex)
    ex.set_defaults(func=cmd_export)

    cp = sub.add_parser("compare", help="the base model and every completed run on a dataset, side by side")
    cp.add_argument("--dataset", required=True)
    cp.add_argument("--metric", help="the metric of the data-efficiency plot (default: the task's main one: "
                                     "mean_iou, accuracy or miou; detection also ap50 and map)")
    cp.add_argument("--json", action="store_true")
    cp.set_defaults(func=cmd_compare)

    sc = sub.add_parser("score", help="score one completion with the task's rewards (the reward playground)")
    sc.add_argument("--task", required=True, choices=list(TASKS))
    sc.add_argument("--truth", required=True, help='JSON: {"boxes": [[x1,y1,x2,y2],...]}, {"label": ...} or {"box": [...]}')
    sc.add_argument("--completion", required=True, help="the model's full text")
    sc.add_argument("--family", choices=list(FAMILIES),
                    help="the model family whose coordinates the completion uses (default: pixels of the image)")
    sc.add_argument("--image-size", help="WIDTHxHEIGHT of the original image, needed with --family")
    sc.add_argument("--input-size", help="WIDTHxHEIGHT the model's processor resized the image to (as `models check` "
                                         "reports it), needed with --family qwen2_5_vl")
    sc.add_argument("--json", action="store_true")
    sc.set_defaults(func=cmd_score)

    models = sub.add_parser("models", help="check a model against your images before training")
    msub = models.add_subparsers(dest="models_command", metavar="ACTION", required=True)
    mc = msub.add_parser("check", help="what the model sees of each image (input size, coordinate frame, visual "
                                       "tokens, memory) and its zero-shot baseline on a few training images")
    mc.add_argument("model", help="'demo', a hub id or a local folder")
    mc.add_argument("--dataset", help="the dataset whose images (and, for the baseline, annotations) to check")
    mc.add_argument("--image", action="append", default=[], metavar="PATH", help="an image to check (repeatable)")
    _pixel_flags(mc)
    mc.add_argument("--samples", type=int, help="training images for the baseline (default 8)")
    mc.add_argument("--signal-images", type=int, metavar="K",
                    help="training images whose G completions the signal check samples at the run's temperature and "
                         "scores with its rewards (default 8; 0: no signal check)")
    mc.add_argument("--no-baseline", action="store_true", help="image sizes only: load the processor, not the model")
    mc.add_argument("--preset", default="CPU demo", choices=list(PRESETS),
                    help="the run's settings the check samples with (G, temperature, rewards, answer length)")
    mc.add_argument("--rewards", help="comma-separated reward names (default: the preset's, else the task's)")
    mc.add_argument("--reward-weights", help="comma-separated weights, one per reward")
    _setting_flags(mc)
    mc.add_argument("--json", action="store_true")
    mc.set_defaults(func=cmd_models_check)
    ml = msub.add_parser("list", help="the published checkpoints of every family: size, visual tokens of a photo, "
                                      "and the plan and memory estimate on a GPU preset's card")
    ml.add_argument("--preset", default="24 GB GPU", choices=list(PRESET_CARD_GIB))
    ml.add_argument("--json", action="store_true")
    ml.set_defaults(func=cmd_models_list)
    return p


def _checkpoint_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", choices=["best", "last"], default="best",
                        help="a run's adapter: best (the default: the checkpoint with the best held-out metric) or last")


def _pixel_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--min-pixels", type=int, help="enlarge images below this many pixels (default: the family's)")
    parser.add_argument("--max-pixels", type=int, help="shrink images above this many pixels (default: the family's, "
                                                       "401,408 = about 512 visual tokens)")


def main(argv: list[str] | None = None) -> int:
    from backend.data.safety import ImportProblem
    from backend.engine.quiet import silence_known_notices
    silence_known_notices()  # commands that load a model (check, predict, eval) import bitsandbytes
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (CliError, ImportProblem, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # `... | head`: the reader has what it wanted
        import os
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error as Python flushes at exit
        return 0
    except Exception as e:  # the file system or the database (a read-only data dir, a full disk): one sentence
        from ui.cli_common import error_sentence
        sentence = error_sentence(e, args.data_dir)
        if sentence is None:
            raise
        print(f"error: {sentence}", file=sys.stderr)
        return 1
