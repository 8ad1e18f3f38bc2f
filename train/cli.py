"""``surgview-train``: data, training and export commands.

surgview-train synth --out DIR --cases N --minutes M --seed S   synthetic cases with ground truth
surgview-train synth --procedure rarp --out DIR                robotic suturing in SAR-RARP50's layout
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from tqdm import tqdm

from engine.clitools import ArgumentParser, CliError, run_subcommand
from train.synth.generate import SynthConfig, SynthError, cpu_workers, generate, made_by_this_generator

PROG = "surgview-train"


def cmd_synth(args) -> int:
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise CliError(f"{out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not (out / "synth.json").exists() and not args.force:
        raise CliError(
            f"{out} is not empty and holds no earlier synthetic cases; "
            "choose an empty folder (or pass --force to write into it)"
        )
    procedure = _synth_procedure(args.procedure)
    if args.workers is not None and args.workers < 1:
        raise CliError("--workers must be at least 1")
    if procedure == "rarp":
        return _synth_rarp(out, args)
    if args.split is not None:
        raise CliError("--split is for --procedure rarp (SAR-RARP50's train1/train2/test folders)")
    config = SynthConfig(
        cases=args.cases,
        minutes=args.minutes if args.minutes is not None else 3.0,
        seed=args.seed,
        width=args.width if args.width is not None else 640,
        height=args.height if args.height is not None else 360,
        fps=args.fps if args.fps is not None else 25,
        gop=args.gop if args.gop is not None else 50,
        first_id=args.first_id,
    )
    try:
        config.validate()
        total = config.cases * config.frames_per_case
        with tqdm(total=total, unit="frame", desc="synth", disable=args.quiet or None, file=sys.stderr) as bar:
            workers = args.workers if args.workers is not None else cpu_workers()
            summary = generate(out, config, progress=bar.update, workers=workers)
    except SynthError as exc:
        raise CliError(str(exc)) from None
    for case in summary["cases"]:
        print(f"{out / 'cholec80' / 'videos' / (case['video'] + '.mp4')}: {case['frames']} frames")
    return 0


def _synth_procedure(name: str | None) -> str:
    from engine.procedures import ProcedureError, get_procedure

    try:
        procedure = get_procedure(name).name
    except ProcedureError as exc:
        raise CliError(str(exc)) from None
    if procedure not in ("cholecystectomy", "rarp"):
        raise CliError(f"no synthetic cases of {procedure} yet; choose cholecystectomy or rarp")
    return procedure


def _synth_rarp(out: Path, args) -> int:
    """Robotic suturing cases in SAR-RARP50's layout (train.synth.rarp)."""
    from train.synth.rarp import RarpConfig, RarpSynthError, generate_rarp

    config = RarpConfig(
        cases=args.cases,
        minutes=args.minutes if args.minutes is not None else 1.0,
        seed=args.seed,
        width=args.width if args.width is not None else 320,
        height=args.height if args.height is not None else 180,
        fps=args.fps if args.fps is not None else 60,
        gop=args.gop if args.gop is not None else 60,
        first_id=args.first_id,
        split=args.split or "train1",
    )
    try:
        config.validate()
        total = config.cases * config.frames_per_case
        with tqdm(total=total, unit="frame", desc="synth", disable=args.quiet or None, file=sys.stderr) as bar:
            summary = generate_rarp(out, config, progress=bar.update)
    except RarpSynthError as exc:
        raise CliError(str(exc)) from None
    for case in summary["cases"][-config.cases :]:
        print(f"{out / case['split'] / case['video'] / 'video_left.avi'}: {case['frames']} frames")
    return 0


def cmd_demo(args) -> int:
    """The demo case and the demo model that ``./dev.sh run`` opens.

    The model is the one bundled in ``resources/demo_model``, trained by this same command with
    ``--train``: ``train/recipes/demo-size.yaml`` (from random weights at 336x168), then ``demo-448.yaml``
    (its SFT model continued at 448x252). ``--train`` rebuilds it from synthetic cases on this machine
    (about two and a half hours on two cores); ``--bundle`` then also replaces the bundled copy.
    """
    import shutil

    from engine.modeldir import ModelDirError, inspect_model_dir
    from engine.resources import resource_path
    from train.model_output import replace_tree

    out = Path(args.out)
    case_dir, model_dir = out, out / "model"
    if not made_by_this_generator(case_dir):  # an older renderer's pictures are not the bundled model's
        if (case_dir / "synth.json").exists():
            print("the demo case was made by an older renderer: making it again", file=sys.stderr)
        config = SynthConfig(cases=1, minutes=args.minutes, seed=args.seed)
        with tqdm(
            total=config.frames_per_case, unit="frame", desc="demo case", file=sys.stderr, disable=args.quiet or None
        ) as bar:
            try:
                generate(case_dir, config, progress=bar.update)
            except SynthError as exc:
                raise CliError(str(exc)) from None
    bundled = resource_path("demo_model")
    if args.train or not (bundled / "surgview.json").exists():
        from train.pipeline import PipelineError, load_pipeline_recipe, run_pipeline

        recipes = Path(__file__).resolve().parent / "recipes"
        first = load_pipeline_recipe(recipes / "demo-size.yaml")  # the demo size from random weights
        first.out = str((out / "training" / "demo-size").resolve())
        recipe = load_pipeline_recipe(recipes / "demo-448.yaml")  # continued at a higher resolution
        recipe.out = str((out / "training" / "demo-448").resolve())
        print("training the demo model (two pipeline runs, resumable: run the command again if stopped)")
        say = lambda line: print(line, flush=True)  # noqa: E731
        try:
            run_pipeline(first, say=say)
            recipe.base_model = str(Path(first.out) / "chain" / "sft" / "model")  # as demo-448.yaml names it
            source = Path(run_pipeline(recipe, say=say)["model"])
        except PipelineError as exc:
            raise CliError(str(exc)) from None
        if args.bundle:
            replace_tree(source, bundled)
            print(f"bundled: {bundled}")
        replace_tree(source, model_dir)
    elif not _same_manifest(bundled, model_dir):  # missing, or an older demo model
        replace_tree(bundled, model_dir)
    try:
        inspect_model_dir(model_dir)
    except ModelDirError as exc:
        raise CliError(f"demo model: {exc}") from None
    shutil.rmtree(model_dir.with_name("model.part"), ignore_errors=True)
    print(f"demo case: {case_dir / 'cholec80' / 'videos' / 'video01.mp4'}")
    print(f"demo model: {model_dir}")
    return 0


def _same_manifest(a: Path, b: Path) -> bool:
    try:
        return (a / "surgview.json").read_bytes() == (b / "surgview.json").read_bytes()
    except OSError:
        return False


ACCELERATE_CONFIGS = Path(__file__).resolve().parent / "accelerate"


def _launch_distributed(args, stage: str = "sft") -> int:
    import subprocess

    config = Path(args.accelerate)
    if not config.suffix:
        config = ACCELERATE_CONFIGS / f"{args.accelerate}.yaml"
    if not config.is_file():
        raise CliError(f"no accelerate config {config} (shipped: ddp, fsdp, zero3, cpu_gloo_2proc)")
    command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config)]
    if args.num_processes:
        command += ["--num_processes", str(args.num_processes)]
    command += ["-m", "train.distributed_entry", args.recipe, "--stage", stage] + (["--fresh"] if args.fresh else [])
    return subprocess.run(command, check=False).returncode


def cmd_sft(args) -> int:
    from train.sft import SFTRunError, load_recipe, run_sft

    if args.accelerate:
        return _launch_distributed(args)

    try:
        model_dir = run_sft(load_recipe(Path(args.recipe)), resume=not args.fresh)
    except SFTRunError as exc:
        raise CliError(str(exc)) from None
    print(f"model: {model_dir}")
    return 0


def cmd_sft_synthetic(args) -> int:
    from train.quickstart import QuickstartConfig, run_quickstart

    config = QuickstartConfig(
        model_size=args.model_size,
        train_cases=args.train_cases,
        test_cases=args.test_cases,
        minutes=args.minutes,
        steps=args.steps,
        seed=args.seed,
    )
    try:
        run_quickstart(Path(args.out), config, say=lambda line: print(line, flush=True))
    except (SynthError, OSError) as exc:
        raise CliError(str(exc)) from None
    return 0


def cmd_grpo(args) -> int:
    from train.grpo.stage import GRPORunError, load_grpo_recipe, run_grpo

    if args.accelerate:
        return _launch_distributed(args, stage="grpo")
    try:
        model_dir = run_grpo(load_grpo_recipe(Path(args.recipe)), resume=not args.fresh)
    except GRPORunError as exc:
        raise CliError(str(exc)) from None
    print(f"model: {model_dir}")
    return 0


def cmd_run(args) -> int:
    from train.data.errors import DatasetError
    from train.grpo.stage import GRPORunError
    from train.pipeline import PipelineError, load_pipeline_recipe, run_pipeline
    from train.sft import SFTRunError

    try:
        recipe = load_pipeline_recipe(Path(args.recipe))
        if args.out:
            recipe.out = str(Path(args.out).resolve())
        run_pipeline(recipe, say=lambda line: print(line, flush=True), stop_after=args.stop_after)
    except (PipelineError, SFTRunError, GRPORunError, DatasetError, SynthError) as exc:
        raise CliError(str(exc)) from None
    return 0


def cmd_eval(args) -> int:
    from engine.tasks import Task
    from train.data.errors import DatasetError
    from train.data.frames import extract_frames, with_cached_frames
    from train.data.surgr1 import read_jsonl
    from train.data.synthetic import synthetic_samples
    from train.eval.report import to_markdown
    from train.eval.run import evaluate_model

    out = Path(args.out)
    task = Task(args.task)
    size = tuple(args.frame_size)
    try:
        if args.synthetic:
            samples = [s for s in synthetic_samples(args.synthetic, tasks=(task,)) if s.task == task]
            samples = with_cached_frames(samples, extract_frames(samples, out / "frames", size=size))
        elif args.sar_rarp50 or args.multibypass140 or args.endovis17:
            samples = _procedure_eval_samples(args, task)
            samples = with_cached_frames(samples, extract_frames(samples, out / "frames", size=size))
        else:
            samples = read_jsonl(Path(args.surgr1))
    except (DatasetError, ValueError) as exc:
        raise CliError(str(exc)) from None
    if args.limit:
        samples = samples[: args.limit]
    if not samples:
        raise CliError("no samples to evaluate")
    with tqdm(total=len(samples), unit="sample", desc="eval", file=sys.stderr, disable=args.quiet or None) as bar:
        try:
            report = evaluate_model(Path(args.model), samples, out, max_new_tokens=args.max_tokens, progress=bar.update)
        except (OSError, ValueError) as exc:
            raise CliError(str(exc)) from None
    print(to_markdown(report))
    print(f"format right (complete chains): {report['format_ok']:.1%}; report: {out / 'report.json'}")
    return 0


def _procedure_eval_samples(args, task) -> list:
    """Evaluation samples of another procedure's dataset (its folder, or one split folder of it)."""
    if args.sar_rarp50:
        from train.data.sar_rarp50 import sar_rarp50_samples

        return sar_rarp50_samples(args.sar_rarp50, tasks=(task,), every=max(1, round(10 / args.fps)))
    if args.multibypass140:
        from train.data.multibypass140 import multibypass140_samples

        samples = multibypass140_samples(args.multibypass140, tasks=(task,), every_s=max(1, round(1 / args.fps)))
        return [s for s in samples if s.split == "test"] or samples
    from train.data.endovis17 import endovis17_samples

    return endovis17_samples(args.endovis17, tasks=(task,))


def cmd_export_onnx(args) -> int:
    from engine.modeldir import ModelDirError
    from train.onnx_export import OnnxExportError, export_onnx

    try:
        folder = export_onnx(Path(args.model), dtype=args.dtype)
    except (ModelDirError, OnnxExportError) as exc:
        raise CliError(str(exc)) from None
    print(f"{folder}: {args.dtype} graphs for onnxruntime (surgview-engine ... --backend onnx --model {args.model})")
    return 0


def cmd_soup(args) -> int:
    from train.soup import SoupError, interpolate_models

    try:
        folder = interpolate_models(Path(args.first), Path(args.second), args.weight, Path(args.out), args.name)
    except SoupError as exc:
        raise CliError(str(exc)) from None
    print(f"{folder}: {1 - args.weight:g} x {args.first} + {args.weight:g} x {args.second} (evaluate it before use)")
    if args.onnx:
        args.model, args.dtype = str(folder), "fp32"
        return cmd_export_onnx(args)
    return 0


def cmd_grow(args) -> int:
    from train.grow import GrowError, grow_model

    try:
        folder = grow_model(
            Path(args.model),
            Path(args.out),
            vision_depth=args.vision_depth,
            text_layers=args.text_layers,
            name=args.name,
        )
    except GrowError as exc:
        raise CliError(str(exc)) from None
    print(f"{folder}: {args.model} grown; it answers as its parent did until trained (base_model of a recipe)")
    return 0


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog=PROG, description="surgview training pipeline.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=ArgumentParser)
    s = sub.add_parser("synth", help="write synthetic cases with exact ground truth (cholecystectomy or rarp)")
    s.add_argument("--out", required=True, help="output folder")
    s.add_argument(
        "--procedure",
        default="cholecystectomy",
        help="cholecystectomy (Cholec80/CholecT50/Endoscapes layouts) or rarp (robotic suturing, SAR-RARP50 layout)",
    )
    s.add_argument("--cases", type=int, default=2)
    s.add_argument("--minutes", type=float, default=None, help="length of each case (3 for cholecystectomy, 1 rarp)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--width", type=int, default=None, help="640 (cholecystectomy) / 320 (rarp)")
    s.add_argument("--height", type=int, default=None, help="360 (cholecystectomy) / 180 (rarp)")
    s.add_argument("--fps", type=int, default=None, help="25 (cholecystectomy); rarp is 60 as SAR-RARP50")
    s.add_argument("--gop", type=int, default=None, help="keyframe interval (frames; 50, rarp 60)")
    s.add_argument("--split", choices=["train1", "train2", "test"], help="rarp: SAR-RARP50 folder (train1)")
    s.add_argument("--first-id", type=int, default=1, help="number of the first video (video01 by default)")
    s.add_argument("--force", action="store_true", help="write into a non-empty folder")
    s.add_argument(
        "--workers", type=int, default=None, help="cases written side by side (default: one per CPU; cholecystectomy)"
    )
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    s.set_defaults(func=cmd_synth)
    d = sub.add_parser("demo", help="build the demo case and the demo model (./dev.sh run opens them)")
    d.add_argument("--out", required=True, help="demo folder (the viewer looks in its data folder's demo/)")
    d.add_argument("--minutes", type=float, default=2.0)
    d.add_argument("--seed", type=int, default=7)
    d.add_argument("--quiet", action="store_true")
    d.add_argument("--train", action="store_true", help="train the demo model here instead of using the bundled one")
    d.add_argument("--bundle", action="store_true", help="with --train: also replace resources/demo_model")
    d.set_defaults(func=cmd_demo)
    f = sub.add_parser("sft", help="supervised fine-tuning on a CoT set (trl SFTTrainer), from a YAML recipe")
    f.add_argument("recipe", metavar="RECIPE.yaml")
    f.add_argument("--fresh", action="store_true", help="ignore earlier checkpoints of this recipe")
    f.add_argument(
        "--accelerate",
        metavar="CONFIG",
        help="run under accelerate launch: ddp, fsdp, zero3, cpu_gloo_2proc (train/accelerate/) or a config file",
    )
    f.add_argument("--num-processes", type=int, default=0)
    f.set_defaults(func=cmd_sft)
    q = sub.add_parser("sft-synthetic", help="synthetic data → CoT → SFT of the tiny model → held-out evaluation")
    q.add_argument("--out", required=True)
    q.add_argument("--train-cases", type=int, default=4)
    q.add_argument("--test-cases", type=int, default=2)
    q.add_argument("--minutes", type=float, default=2.0)
    q.add_argument("--steps", type=int, default=800)
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("--model-size", choices=["tiny", "small"], default="tiny")
    q.set_defaults(func=cmd_sft_synthetic)
    e = sub.add_parser("eval", help="per-task metrics and the arena score of a model on a set")
    e.add_argument("model", metavar="MODEL_DIR")
    source = e.add_mutually_exclusive_group(required=True)
    source.add_argument("--synthetic", metavar="DIR", help="a folder written by synth")
    source.add_argument("--surgr1", metavar="SET.jsonl", help="a Surg-R1 / ms-swift JSONL set")
    source.add_argument("--sar-rarp50", metavar="DIR", help="SAR-RARP50 videos (its root or one split folder)")
    source.add_argument("--multibypass140", metavar="DIR", help="a MultiBypass140 root (its fold-0 test videos)")
    source.add_argument("--endovis17", metavar="DIR", help="EndoVis 2017 instrument_dataset_N folders")
    e.add_argument(
        "--task",
        default="phase",
        choices=[
            "phase", "phase_mcq", "tools", "triplet", "cvs", "localisation", "frame_analysis", "action", "action_mcq",
            "step",
        ],
    )  # fmt: skip
    e.add_argument("--fps", type=float, default=1.0, help="samples per second of video (datasets with videos)")
    e.add_argument("--frame-size", type=int, nargs=2, default=[224, 126], metavar=("W", "H"), help="cached frames")
    e.add_argument("--limit", type=int, default=0, help="evaluate only the first N samples")
    e.add_argument("--max-tokens", type=int, default=160)
    e.add_argument("--out", required=True, help="folder for report.json, report.md, responses.jsonl")
    e.add_argument("--quiet", action="store_true")
    e.set_defaults(func=cmd_eval)
    g = sub.add_parser("grpo", help="GRPO with the rule-based rewards (trl GRPOTrainer), from a YAML recipe")
    g.add_argument("recipe", metavar="RECIPE.yaml")
    g.add_argument("--fresh", action="store_true", help="ignore earlier checkpoints of this recipe")
    g.add_argument("--accelerate", metavar="CONFIG", help="run under accelerate launch (as for sft)")
    g.add_argument("--num-processes", type=int, default=0)
    g.set_defaults(func=cmd_grpo)
    r = sub.add_parser(
        "run", help="the whole pipeline: data, CoT, SFT, GRPO, self-iteration, evaluation, export (resumable)"
    )
    r.add_argument("recipe", metavar="RECIPE.yaml", help="e.g. train/recipes/tiny-synthetic.yaml")
    r.add_argument("--out", help="run folder (default: the recipe's out)")
    r.add_argument("--stop-after", metavar="STAGE", help="stop once this stage is done (e.g. chain/sft)")
    r.set_defaults(func=cmd_run)
    w = sub.add_parser(
        "soup", help="the weights between two fine-tunes of one model (WiSE-FT): a model keeping what each does well"
    )
    w.add_argument("first", metavar="MODEL_A", help="e.g. the model a run continued")
    w.add_argument("second", metavar="MODEL_B", help="e.g. that run's model")
    w.add_argument("--weight", type=float, default=0.5, help="the share of MODEL_B, strictly between 0 and 1 (0.5)")
    w.add_argument("--out", required=True, help="a new folder for the interpolated model")
    w.add_argument("--name", help="its name (default: MODEL_B's)")
    w.add_argument("--onnx", action="store_true", help="also write its ONNX graphs (fp32)")
    w.set_defaults(func=cmd_soup)
    g = sub.add_parser(
        "grow", help="a deeper copy of a model that answers as it did (block expansion): capacity to train further"
    )
    g.add_argument("model", metavar="MODEL_DIR")
    g.add_argument("--out", required=True, help="a new folder for the grown model")
    g.add_argument("--vision-depth", type=int, help="vision blocks in the grown model (default: as it is)")
    g.add_argument("--text-layers", type=int, help="language-model layers in the grown model (default: as it is)")
    g.add_argument("--name", help="its name (default: MODEL_DIR's)")
    g.set_defaults(func=cmd_grow)
    x = sub.add_parser("export-onnx", help="write MODEL_DIR/onnx: the model as ONNX graphs for onnxruntime")
    x.add_argument("model", metavar="MODEL_DIR")
    x.add_argument("--dtype", choices=["fp32", "fp16"], default="fp32", help="fp32 for CPU, fp16 for CUDA")
    x.set_defaults(func=cmd_export_onnx)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    return run_subcommand(PROG, build_parser, argv)


if __name__ == "__main__":
    sys.exit(main())
