"""The command line: every power of the page, headless, with --json for scripts."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from backend.data.config import data_dir as resolve_data_dir


class CliError(Exception):
    """A mistake the person can fix: printed as one sentence, exit status 1."""


def _print(obj: Any, as_json: bool, text: str) -> None:
    print(json.dumps(obj, indent=2, default=str) if as_json else text)


def _open(args: argparse.Namespace):
    from backend.data.workspace import open_workspace
    return open_workspace(resolve_data_dir(args.data_dir))


def cmd_datasets_import(args: argparse.Namespace) -> int:
    from backend.data.catalog import get_dataset
    from backend.data.importer import import_dataset
    ws = _open(args)
    import_dataset(ws.store, ws.data_dir, [Path(p) for p in args.paths], args.name, task=args.task,
                   fmt=args.format, val_fraction=args.val_fraction)
    info = get_dataset(ws.store, args.name, with_samples=False)
    _print(info, args.json, _describe(info))
    return 0


def _describe(info: dict) -> str:
    c = info["counts"]
    lines = [f"{info['name']}: {info['task']} ({info['format']}), {c['total']} images "
             f"({c['train']} train, {c['val']} held out)"]
    for cls, n in info["per_class"].items():
        lines.append(f"  {cls}: {n['train']} train, {n['val']} val")
    lines += [f"  note: {w}" for w in info["warnings"]]
    return "\n".join(lines)


def cmd_datasets_list(args: argparse.Namespace) -> int:
    from backend.data.catalog import list_datasets
    rows = list_datasets(_open(args).store)
    text = "\n".join(f"{d['name']}\t{d['task']}\t{d['counts']['total']} images\t{len(d['classes'])} classes"
                     for d in rows) or "no datasets yet"
    _print(rows, args.json, text)
    return 0


def cmd_datasets_show(args: argparse.Namespace) -> int:
    from backend.data.catalog import get_dataset
    info = get_dataset(_open(args).store, args.name)
    _print(info, args.json, _describe(info))
    return 0


def cmd_datasets_delete(args: argparse.Namespace) -> int:
    from backend.data.catalog import delete_dataset
    ws = _open(args)
    delete_dataset(ws.store, ws.data_dir, args.name)
    print(f"deleted dataset '{args.name}'")
    return 0


def cmd_score(args: argparse.Namespace) -> int:
    from backend.scoring.playground import parse_size, score
    try:
        truth = json.loads(args.truth)
    except ValueError as e:
        raise CliError(f"--truth is not valid JSON ({e})") from None
    result = score(args.task, truth, args.completion, args.family, parse_size(args.image_size),
                   parse_size(args.input_size))
    lines = [f"{name}: {value:.4f}" for name, value in result["rewards"].items()]
    lines.append(f"total: {result['total']:.4f}")
    parsed = result["parsed"]
    lines.append(f"format ok: {parsed['format_ok']}")
    if "boxes" in parsed:
        lines.append(f"parsed boxes (pixels): {parsed['boxes']}")
    if "label" in parsed:
        lines.append(f"parsed label: {parsed['label']}")
    _print(result, args.json, "\n".join(lines))
    return 0


def _settings(args: argparse.Namespace):
    from backend.engine.settings import preset
    rewards = [r.strip() for r in args.rewards.split(",") if r.strip()] if args.rewards else None
    try:
        weights = [float(w) for w in args.reward_weights.split(",")] if args.reward_weights else None
    except ValueError:
        raise CliError(f"--reward-weights must be numbers separated by commas, got '{args.reward_weights}'") from None
    from dataclasses import fields

    from backend.engine.settings import TrainSettings
    given = {f.name: getattr(args, f.name) for f in fields(TrainSettings)
             if f.name not in ("rewards", "reward_weights") and getattr(args, f.name, None) is not None}
    return preset(args.preset, rewards=rewards, reward_weights=weights, **given)


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
        if f.name in CHOICES:
            extra["choices"] = list(CHOICES[f.name])
        parser.add_argument(flag, dest=f.name, default=None, help=helps.get(f.name, "").replace("%", "%%"), **extra)


def cmd_runs_create(args: argparse.Namespace) -> int:
    from backend.engine.preflight import launch_check
    from backend.jobs.runs import create_run
    ws, settings = _open(args), _settings(args)
    memory = None if args.ignore_memory_estimate else launch_check(ws, args.dataset, args.model, settings)
    run_id = create_run(ws.store, args.dataset, args.model, settings)
    text = f"queued run {run_id}" + (f"\n  GPU memory estimate: {memory['summary']}" if memory else "")
    _print({"id": run_id, "memory": memory}, args.json, text)
    return 0


def cmd_models_check(args: argparse.Namespace) -> int:
    from backend.engine.preflight import DEFAULT_SAMPLES, check
    result = check(_open(args), args.model, dataset_name=args.dataset, image_paths=[Path(p) for p in args.image],
                   min_pixels=args.min_pixels, max_pixels=args.max_pixels, samples=args.samples or DEFAULT_SAMPLES,
                   with_baseline=not args.no_baseline)
    lines = [f"{result['model']} ({result['family']}): images resized within {result['min_pixels']:,}.."
             f"{result['max_pixels']:,} pixels", "  original -> input (frame), visual tokens:"]
    seen = set()
    for im in result["images"]:
        key = (tuple(im["original"]), tuple(im["input"]))
        if key not in seen:  # one line per distinct size
            seen.add(key)
            lines.append(f"  {im['original'][0]}x{im['original'][1]} -> {im['input'][0]}x{im['input'][1]} "
                         f"(frame {im['frame'][0]}x{im['frame'][1]}), {im['visual_tokens']} tokens   e.g. {im['path']}")
    if result["memory"]:
        lines.append(f"  GPU memory estimate (largest image): {result['memory']['summary']}")
    base = result["baseline"]
    if base:
        lines.append(f"  zero-shot baseline on {len(base['samples'])} training images: format rate "
                     f"{base['format_rate']:.2f}, " + ", ".join(f"{k} {v:.3f}" for k, v in base["means"].items()))
        lines.append(f"  pictures (truth green, prediction red): {Path(base['samples'][0]['picture']).parent}")
    lines += [f"advice: {a}" for a in result["advice"]]
    _print(result, args.json, "\n".join(lines))
    return 0


def cmd_runs_list(args: argparse.Namespace) -> int:
    from backend.jobs.runs import list_runs
    rows = list_runs(_open(args).store)
    text = "\n".join(f"{r['id']}\t{r['status']}\t{r['step']}/{r['max_steps']}\t{r['model']}\t{r['task']}"
                     for r in rows) or "no runs yet"
    _print(rows, args.json, text)
    return 0


def cmd_runs_show(args: argparse.Namespace) -> int:
    from backend.jobs.runs import run_json
    run = run_json(_open(args).store, args.id)
    last = {k: v[-1][1] for k, v in run["metrics"].items() if k in ("reward", "loss", "kl", "completions/mean_length")}
    best = run["best"]
    text = (f"run {run['id']}: {run['method']} {run['status']} at step {run['step']}/{run['max_steps']}, {run['model']} "
            f"on {run['task']}" + (f" (from run {run['init_from']})" if run["init_from"] is not None else "")
            + f"\n  latest: {json.dumps(last)}\n  evaluation: {json.dumps(run['evaluation'])}"
            + (f"\n  best: {best['metric']} {best['value']:.4f} at step {best['step']}" if best else "")
            + (f"\n  error: {run['error']}" if run["error"] else ""))
    _print(run, args.json, text)
    return 0


def cmd_runs_cancel(args: argparse.Namespace) -> int:
    from backend.jobs.runs import cancel_run
    status = cancel_run(_open(args).store, args.id)
    print(f"run {args.id}: " + ("cancel requested; it stops at the next step" if status == "running" else status))
    return 0


def cmd_runs_logs(args: argparse.Namespace) -> int:
    from backend.jobs.runs import get_run
    ws = _open(args)
    run = get_run(ws.store, args.id)
    log = ws.data_dir / (run.folder or "") / "train.log"
    print(log.read_text(errors="replace") if log.is_file() else (run.log_tail or "no log yet"))
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    from backend.engine.gpus import parse_gpus
    from backend.jobs.worker import work
    gpus = parse_gpus(args.gpus) if args.gpus is not None else None
    n = work(_open(args), once=args.once, lease_seconds=args.lease_seconds, gpus=gpus, max_attempts=args.max_attempts)
    print(f"worker finished {n} run{'s' if n != 1 else ''}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from backend.data.demo.dataset import ensure_demo_dataset
    from backend.engine.models import DEMO_FOLDER, DEMO_MODEL
    ws = _open(args)
    if not (DEMO_FOLDER / "config.json").is_file():
        raise CliError(f"the demo model is missing from {DEMO_FOLDER}; rebuild it with "
                       "`python -m backend.engine.demo.builder`")
    dataset = ensure_demo_dataset(ws.store, ws.data_dir)
    _print({"model": DEMO_MODEL, "dataset": dataset}, args.json, f"model: {DEMO_MODEL}\ndataset: {dataset}")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from backend.jobs.predict import predict
    ws = _open(args)
    result = predict(ws, Path(args.image), run_id=args.run, model=args.model, category=args.category,
                     question=args.question, checkpoint=args.checkpoint)
    text = f"reasoning: {result['think']}\nanswer: {result['answer']}"
    if result["checkpoint"]:
        text = f"checkpoint: {result['checkpoint']['which']} (step {result['checkpoint']['step']})\n" + text
    if "boxes" in result:
        text += f"\nboxes (pixels): {result['boxes']}"
    _print(result, args.json, text)
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from backend.jobs.predict import evaluate_run
    result = evaluate_run(_open(args), args.run, checkpoint=args.checkpoint)
    _print(result, args.json, json.dumps(result, indent=2))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from backend.jobs.predict import export
    out = export(_open(args), args.run, Path(args.out), merged=args.merged, checkpoint=args.checkpoint)
    print(f"exported {'merged model' if args.merged else 'adapter'} to {out}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from backend.jobs.compare import compare
    table = compare(_open(args).store, args.dataset)
    lines = [f"{table['dataset']} ({table['task']}): the base model and every completed run, held-out metrics after "
             "training (best: the best step's main metric)"]
    for row in table["rows"]:
        shown = ", ".join(f"{k} {v:.3f}" for k, v in row["metrics"].items()
                          if isinstance(v, float) and k not in ("seconds",))
        who = "base" if row["run"] is None else f"run {row['run']}"
        method = row["method"] + (f" after run {row['init_from']}" if row["init_from"] is not None else "")
        best = f"; best {row['best']['value']:.3f} at step {row['best']['step']}" if row["best"] else ""
        lines.append(f"  {who}\t{method}\t{row['steps']} steps\t{row['seconds']:.0f} s\t{shown}{best}")
    _print(table, args.json, "\n".join(lines))
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from ui.server import serve
    return serve(resolve_data_dir(args.data_dir), host=args.host, port=args.port, auth=args.auth, share=args.share,
                 insecure_no_auth=args.insecure_no_auth)


def build_parser() -> argparse.ArgumentParser:
    from backend.data.formats import FORMATS
    from backend.engine.settings import GENERATION_BACKENDS, PRESETS
    from backend.scoring.coords import CONVENTIONS
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
    p.set_defaults(func=cmd_serve)
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    sub.add_parser("serve", help="serve the web app (the default)").set_defaults(func=cmd_serve)

    ds = sub.add_parser("datasets", help="import, list, show and delete datasets")
    dsub = ds.add_subparsers(dest="datasets_command", metavar="ACTION", required=True)
    imp = dsub.add_parser("import", help="import a zip or files as a dataset")
    imp.add_argument("paths", nargs="+", metavar="PATH", help="a zip archive, or images and annotation files")
    imp.add_argument("--name", required=True)
    imp.add_argument("--task", choices=list(TASKS), help="default: the format's task")
    imp.add_argument("--format", default="auto", choices=["auto", *FORMATS])
    imp.add_argument("--val-fraction", type=float, default=0.2, help="share held out for evaluation (default 0.2)")
    imp.add_argument("--json", action="store_true")
    imp.set_defaults(func=cmd_datasets_import)
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
    cr.add_argument("--model", required=True, help="'demo', a hub id (Qwen/Qwen2-VL-2B-Instruct) or a local folder")
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

    ev = sub.add_parser("eval", help="evaluate a run's adapter on its dataset's held-out split")
    ev.add_argument("--run", type=int, required=True)
    _checkpoint_flag(ev)
    ev.add_argument("--json", action="store_true")
    ev.set_defaults(func=cmd_eval)

    ex = sub.add_parser("export", help="write a run's adapter, or the merged full-precision model")
    ex.add_argument("--run", type=int, required=True)
    ex.add_argument("--out", required=True)
    ex.add_argument("--merged", action="store_true")
    _checkpoint_flag(ex)
    ex.set_defaults(func=cmd_export)

    cp = sub.add_parser("compare", help="the base model and every completed run on a dataset, side by side")
    cp.add_argument("--dataset", required=True)
    cp.add_argument("--json", action="store_true")
    cp.set_defaults(func=cmd_compare)

    sc = sub.add_parser("score", help="score one completion with the task's rewards (the reward playground)")
    sc.add_argument("--task", required=True, choices=list(TASKS))
    sc.add_argument("--truth", required=True, help='JSON: {"boxes": [[x1,y1,x2,y2],...]}, {"label": ...} or {"box": [...]}')
    sc.add_argument("--completion", required=True, help="the model's full text")
    sc.add_argument("--family", choices=list(CONVENTIONS),
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
    mc.add_argument("--no-baseline", action="store_true", help="image sizes only: load the processor, not the model")
    mc.add_argument("--json", action="store_true")
    mc.set_defaults(func=cmd_models_check)
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
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (CliError, ImportProblem, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
