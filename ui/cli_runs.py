"""Commands on runs and models: create, list, show, cancel, logs, the worker, predict, eval, export, compare,
models check."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ui.cli_common import CliError, _open, _print


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


def cmd_runs_create(args: argparse.Namespace) -> int:
    from backend.engine.preflight import launch_check
    from backend.jobs.runs import create_run
    ws, settings = _open(args), _settings(args)
    memory = None if args.ignore_memory_estimate else launch_check(ws, args.dataset, args.model, settings)
    run_id = create_run(ws.store, args.dataset, args.model, settings)
    from backend.engine.cpu_advice import dataset_cpu_warning
    warning = dataset_cpu_warning(ws, args.dataset, args.model, settings)
    if warning:  # queued all the same: a worker with a GPU may take it
        print(f"warning: {warning}", file=sys.stderr)
    text = f"queued run {run_id}" + (f"\n  on a GPU: {memory['plan']}\n  GPU memory estimate: {memory['summary']}"
                                     if memory else "")
    _print({"id": run_id, "memory": memory}, args.json, text)
    return 0


def cmd_models_check(args: argparse.Namespace) -> int:
    from backend.engine.preflight import DEFAULT_SAMPLES, SIGNAL_IMAGES, check, readiness_line, signal_sentences
    from backend.engine.settings import check_values
    ws, settings = _open(args), _settings(args)
    check_values(settings)  # the signal check samples with them
    start = None
    if settings.init_from is not None:  # what a GRPO run with --init-from starts from: that SFT run's adapter
        from backend.jobs.predict import chosen_adapter
        start = chosen_adapter(ws, settings.init_from)[0]
    result = check(ws, args.model, dataset_name=args.dataset, image_paths=[Path(p) for p in args.image],
                   min_pixels=settings.min_pixels, max_pixels=settings.max_pixels,
                   samples=args.samples or DEFAULT_SAMPLES, with_baseline=not args.no_baseline, settings=settings,
                   signal_images=SIGNAL_IMAGES if args.signal_images is None else args.signal_images, start=start)
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
        lines.append(f"  on a GPU: {result['memory']['plan']}")
        lines.append(f"  GPU memory estimate (largest image): {result['memory']['summary']}")
    dense = result.get("dense")
    if dense:
        lines.append(f"  boxes per image: {dense['boxes_per_image'][0]}–{dense['boxes_per_image'][1]}; the longest "
                     f"answer (~{dense['answer_tokens']} tokens, {dense['densest_boxes']} '{dense['densest_class']}') "
                     f"needs max_completion_length >= {dense['suggested_max_completion_length']} "
                     f"(set: {dense['max_completion_length']})")
    base = result["baseline"]
    if base:
        lines.append(f"  zero-shot baseline on {len(base['samples'])} training images: format rate "
                     f"{base['format_rate']:.2f}, " + ", ".join(f"{k} {v:.3f}" for k, v in base["means"].items()))
        lines.append(f"  pictures (truth green, prediction red): {Path(base['samples'][0]['picture']).parent}")
    lines += [f"  {line}" for line in signal_sentences(result)]
    lines += [f"advice: {a}" for a in result["advice"]]
    lines.append(readiness_line(result))
    _print(result, args.json, "\n".join(lines))
    return 0


def cmd_models_list(args: argparse.Namespace) -> int:
    from backend.engine.checkpoints import PHOTO, checkpoint_rows, checkpoint_table
    rows = checkpoint_rows(args.preset, vllm_installed=True)
    headers, table = checkpoint_table(rows)
    widths = [max(len(str(x)) for x in col) for col in zip(headers, *table)]
    lines = [f"known checkpoints with the '{args.preset}' preset (a {PHOTO[0]}x{PHOTO[1]} photo; plan and memory "
             f"as the run plan picks them on a GPU machine with requirements-gpu.txt installed):"]
    lines += ["  " + "  ".join(str(x).ljust(w) for x, w in zip(r, widths)).rstrip() for r in [headers, *table]]
    lines.append("any other checkpoint of these families trains too: give its hub id or local folder")
    _print(rows, args.json, "\n".join(lines))
    return 0


def cmd_runs_list(args: argparse.Namespace) -> int:
    from backend.jobs.runs import list_runs
    rows = list_runs(_open(args).store)
    text = "\n".join(f"{r['id']}\t{r['status']}\t{r['step']}/{r['max_steps']}\t{r['model']}\t{r['task']}"
                     for r in rows) or "no runs yet"
    _print(rows, args.json, text)
    return 0


def cmd_runs_show(args: argparse.Namespace) -> int:
    from backend.jobs.run_history import run_json
    from backend.jobs.runs import training_set_text
    from backend.scoring.verdict import verdict_sentence
    ws = _open(args)
    run = run_json(ws.store, args.id, data_dir=ws.data_dir)
    last = {k: v[-1][1] for k, v in run["metrics"].items() if k in ("reward", "loss", "kl", "completions/mean_length")}
    best = run["best"]
    summary = {phase: {k: v for k, v in e.items() if k != "per_image"} for phase, e in run["evaluation"].items()}
    text = (f"run {run['id']}: {run['method']} {run['status']} at step {run['step']}/{run['max_steps']}, {run['model']} "
            f"on {run['task']}" + (f" (from run {run['init_from']})" if run["init_from"] is not None else "")
            + f"\n  {training_set_text(run['training_set'])}"
            + f"\n  latest: {json.dumps(last)}\n  evaluation: {json.dumps(summary)}"
            + (f"\n  best: {best['metric']} {best['value']:.4f} at step {best['step']}" if best else "")
            + f"\n  {verdict_sentence(run['verdict'])}"
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
    n = work(_open(args), once=args.once, lease_seconds=args.lease_seconds, gpus=gpus, max_attempts=args.max_attempts,
             handle_signals=True, stop_seconds=args.stop_seconds)
    print(f"worker finished {n} run{'s' if n != 1 else ''}")
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
    result = evaluate_run(_open(args), args.run, checkpoint=args.checkpoint, split=args.split)
    _print(result, args.json, json.dumps(result, indent=2))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from backend.jobs.predict import export
    from backend.jobs.reproduce import usage, write_trl_script
    from backend.jobs.runs import get_run
    ws = _open(args)
    if args.trl_script and Path(args.trl_script).exists() and any(Path(args.trl_script).iterdir()):
        raise ValueError(f"{args.trl_script} is not empty")
    out = export(ws, args.run, Path(args.out), merged=args.merged, checkpoint=args.checkpoint)
    print(f"exported {'merged model' if args.merged else 'adapter'} to {out}")
    print(usage(get_run(ws.store, args.run).model, out, args.merged))
    if args.trl_script:
        print(f"TRL script: python {write_trl_script(ws, args.run, Path(args.trl_script))}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from backend.jobs.compare import compare
    from backend.scoring.verdict import within_noise
    ws = _open(args)
    table = compare(ws.store, args.dataset, args.metric, ws.data_dir)
    lines = [f"{table['dataset']} ({table['task']}): the base model and every completed run, held-out metrics after "
             "training (best: the best step's main metric)"]
    for row in table["rows"]:
        shown = ", ".join(f"{k} {v:.3f}" for k, v in row["metrics"].items()
                          if isinstance(v, float) and k not in ("seconds",))
        who = "base" if row["run"] is None else f"run {row['run']}"
        method = row["method"] + (f" after run {row['init_from']}" if row["init_from"] is not None else "")
        best = f"; best {row['best']['value']:.3f} at step {row['best']['step']}" if row["best"] else ""
        change = f"; change {within_noise(row['change'])}" if row.get("change") else ""
        lines.append(f"  {who}\t{method}\t{row['steps']} steps\t{row['seconds']:.0f} s\t{shown}{best}{change}")
    lines += [f"  {c['what']}: {within_noise(c)}" for c in table["contrasts"]]
    lines += efficiency_text(table)
    _print(table, args.json, "\n".join(lines))
    return 0


def efficiency_text(table: dict) -> list[str]:
    """The data-efficiency table (runs grouped by method and shots, seeds averaged, base / novel classes apart) and
    its plot as text: each line's points, metric against shots."""
    from backend.jobs.compare import efficiency_table
    eff = table["efficiency"]
    if not eff["groups"]:
        return []
    headers, rows = efficiency_table(eff, table["task"])
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    lines = ["", "data efficiency: completed runs by method and shots (mean ± sd over seeds; 'all' = every training "
             "image, the most any class has)"]
    lines += ["  " + "  ".join(c.ljust(w) for c, w in zip(line, widths)) for line in (headers, *rows)]
    lines += ["", f"plot: held-out {eff['metric']} against shots (0 = before training), a line per method"]
    series: dict[str, list] = {}
    for p in eff["points"]:
        series.setdefault(p["series"], []).append(p)
    for name, points in series.items():
        lines.append(f"  {name}: " + "  ".join(
            f"{'all' if p['shots'] == eff['all_x'] and p['shots'] else p['shots']}→{p['value']:.3f}" for p in points))
    return lines
