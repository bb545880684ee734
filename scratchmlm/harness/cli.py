"""The command line: ``scratchmlm train | evaluate | sample | fill-mask | plot | compare | check | grade |
assignment | export | env``.

``evaluate``, ``sample``, ``fill-mask`` and ``env`` take ``--json``: then stdout holds one JSON
document and nothing else (messages go to stderr).

Every ``ModelConfig`` / ``TrainConfig`` field is a flag of ``train`` (``--d-model 256``,
``--steps 500``, ...), on top of an optional ``--config file.json``.

Every failure is one line on stderr (``scratchmlm: error: ...``), never a traceback: exit status 2
for every failure scratchmlm explains itself (bad input, a checkpoint it could not write), 1 for
other errors of the machine (an OS error elsewhere, out of memory). A run stopped by Ctrl-C
or SIGTERM saves itself and exits with 130 or 143, as shells expect.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import signal
import sys
import threading
import time
from pathlib import Path

from ..errors import ScratchMLMError
from ..files import regular_file, resolved, write_atomically
from .config import PRESETS, ModelConfig, RunConfig, TrainConfig, check_resumed_config, preset
from .interrupt import SIGNAL_NAMES, Terminated, raise_terminated


def _parse_bool(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


LARGEST_INT = 2 ** 63 - 1     # what torch and numpy hold in an int64


def _integer(low: int = -LARGEST_INT, high: int = LARGEST_INT):
    """An argparse type: an integer from ``low`` to ``high``, the range the library can use (the
    settings' own checks then say what a usable value is, in one line)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be at least {low:,} and at most {high:,}, got {text}")
        return value
    parse.__name__ = "integer"
    return parse


# Flags that hold paths (any bytes a file name may have); every other text must be valid Unicode.
PATH_FLAGS = ("train.data", "train.init_from")


def check_arguments(args) -> None:
    """What argparse cannot check: every text is valid Unicode (a non-UTF-8 byte in argv arrives as
    a lone surrogate, which no text can be encoded with), and the files given are regular files."""
    for name, value in vars(args).items():
        if name in PATH_FLAGS:
            continue
        for text in value if isinstance(value, list) else [value]:
            if isinstance(text, str):
                _check_unicode(text, name)
    for name in PATH_FLAGS:
        if vars(args).get(name):
            resolved(vars(args)[name], "--" + name.split(".")[1].replace("_", "-"))
    if getattr(args, "config", None) is not None:
        regular_file(resolved(args.config, "--config file"), "--config file")


def _check_unicode(text: str, name: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        flag = "The text" if name == "text" else "--" + name.split(".")[-1].replace("_", "-")
        byte = ord(text[error.start])
        shown = f"byte {byte - 0xDC00:#04x}" if 0xDC80 <= byte <= 0xDCFF else f"character U+{byte:04X}"
        raise ScratchMLMError(f"{flag} is not valid UTF-8 text ({shown} at character {error.start}); "
                              f"type it in a UTF-8 terminal or convert it first.") from None


def _print_json(data) -> None:
    """``data`` as JSON on stdout, alone: strict JSON (no NaN / Infinity), UTF-8 characters as they are."""
    print(json.dumps(data, indent=2, ensure_ascii=False, allow_nan=False))


def _add_config_flags(parser: argparse.ArgumentParser, config_class, group_title: str) -> None:
    """One flag per field of ``config_class``, with the field's help text and choices."""
    group = parser.add_argument_group(f"{group_title} settings")
    for field in dataclasses.fields(config_class):
        if config_class is ModelConfig and field.name == "vocab_size":
            continue  # always taken from the tokenizer
        kind = {"bool": _parse_bool, "int": _integer(), "float": float, "str": str}[field.type]
        choices = field.metadata.get("choices")
        group.add_argument("--" + field.name.replace("_", "-"), dest=f"{group_title}.{field.name}",
                           type=kind, default=None, choices=choices,
                           metavar=None if choices else {"bool": "BOOL", "int": "N", "float": "X"}.get(field.type, "TEXT"),
                           help=f"{field.metadata['help']} (default: {field.default})")


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = argparse.ArgumentParser(
        prog="scratchmlm",
        description="A from-scratch BERT-style masked language model, trained character by character.",
        epilog="Example: scratchmlm train --steps 300 --run-dir runs/quick && "
               "scratchmlm sample runs/quick")
    parser.add_argument("--version", action="version", version=f"scratchmlm {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    train = commands.add_parser("train", help="train a model (the seed configuration by default)",
                                description="Train the masked language model and print coloured samples. "
                                            "The progress bar goes to stderr; TQDM_DISABLE=1 silences it, "
                                            "--quiet everything but the result.")
    train.add_argument("--run-dir", type=Path, default=None,
                       help="where config, metrics, checkpoints, samples and plots go "
                            "(default: runs/<date-time>)")
    train.add_argument("--config", type=Path, help='JSON file {"model": {...}, "train": {...}}; flags override it')
    train.add_argument("--preset", choices=sorted(PRESETS), default=None,
                       help="start from a named configuration; flags override it. "
                            + "; ".join(f"{name}: {text}" for name, text in PRESETS.items()))
    train.add_argument("--resume", action="store_true",
                       help="continue the run in --run-dir exactly where its last checkpoint left off")
    train.add_argument("--color", default="auto", choices=["auto", "always", "never"],
                       help="colour the samples: auto = only on a terminal without NO_COLOR (default: auto)")
    train.add_argument("--quiet", action="store_true",
                       help="no progress bar, start line or samples: only the final result and the run "
                            "directory (errors are still printed). TQDM_DISABLE=1 in the environment "
                            "silences the progress bar alone")
    train.add_argument("--no-plots", action="store_true",
                       help="do not draw plots/curves.png and plots/noam.png when training ends (about a second "
                            "each); 'scratchmlm plot RUN' draws them at any time")
    _add_config_flags(train, TrainConfig, "train")
    _add_config_flags(train, ModelConfig, "model")

    def with_run(name, help_text):
        command = commands.add_parser(name, help=help_text, description=help_text)
        command.add_argument("run", type=Path, help="a run directory written by 'scratchmlm train'")
        command.add_argument("--checkpoint", default="best", choices=["best", "last"],
                             help="best = lowest validation loss, last = the newest (default: best)")
        command.add_argument("--device", default="auto",
                             help="auto (a CUDA GPU if there is one), cpu, cuda or cuda:N (default: auto)")
        return command

    evaluate = with_run("evaluate", "score a run on the frozen validation set, beside the baselines")
    evaluate.add_argument("--text", default=None,
                          help="also print the pseudo-perplexity of this text (each character masked in turn)")
    evaluate.add_argument("--json", action="store_true",
                          help="print one JSON object: the model's and the baselines' scores, the validation "
                               "fingerprint and the pseudo-perplexity")
    sample = with_run("sample", "fill masked validation lines (or your prompts) and colour them by correctness")
    sample.add_argument("--prompt", action="append", default=None,
                        help="your own prompt (repeatable); a literal [MASK] marks what to fill")
    sample.add_argument("--count", type=_integer(high=10_000), default=8, metavar="N",
                        help="number of validation prompts (default: 8)")
    sample.add_argument("--seed", type=_integer(0), default=0, metavar="N",
                        help="seed of the prompt choice and the masks (default: 0)")
    sample.add_argument("--color", default="auto", choices=["auto", "always", "never"],
                        help="auto = only on a terminal without NO_COLOR (default: auto)")
    sample.add_argument("--json", action="store_true",
                        help="print a JSON list, one record per prompt: text, masked, filled and every filled "
                             "position with its expected and predicted character")
    fill = with_run("fill-mask", "top-k characters with probabilities for every [MASK] in TEXT")
    fill.add_argument("text", help='e.g. "To be, or not to b[MASK]"')
    fill.add_argument("--top-k", type=_integer(high=10_000), default=5, metavar="K",
                      help="candidates shown per [MASK] (default: 5)")
    fill.add_argument("--json", action="store_true",
                      help="print a JSON list with one list per [MASK] of Hugging Face fill-mask pipeline "
                           "records {score, token, token_str, sequence}")
    export = commands.add_parser(
        "export", help="write a run's weights as model.safetensors + config.json + tokenizer.json",
        description="Write a folder that loads without unpickling anything: model.safetensors, config.json "
                    "and the Hugging Face tokenizer.json. Load it with scratchmlm.load_pretrained(DIR), or "
                    "give it to evaluate / sample / fill-mask in place of a run directory. With --format "
                    "transformers (a run trained with --preset bert; needs pip install 'scratchmlm[hf]'): a "
                    "Hugging Face folder that BertForMaskedLM.from_pretrained and pipeline('fill-mask') load.")
    export.add_argument("run", type=Path, help="a run directory written by 'scratchmlm train'")
    export.add_argument("--format", default="scratchmlm", choices=["scratchmlm", "transformers"],
                        help="scratchmlm: for scratchmlm.load_pretrained; transformers: for Hugging Face's "
                             "BertForMaskedLM (default: scratchmlm)")
    export.add_argument("--out", type=Path, default=None, metavar="DIR",
                        help="the folder to write (default: RUN/export, or RUN/transformers with --format "
                             "transformers)")
    export.add_argument("--checkpoint", default="best", choices=["best", "last"],
                        help="best = lowest validation loss, last = the newest (default: best)")
    env = commands.add_parser(
        "env", help="versions, data directory, corpus checksum, threads and device: for bug reports",
        description="Print the versions of scratchmlm and its libraries, the data directory, whether the "
                    "corpus is there and its sha256, torch's threads and the device 'auto' picks.")
    env.add_argument("--json", action="store_true", help="print one JSON object")
    plot = with_run("plot", "write loss/accuracy/lr/grad-norm curves, the Noam curve, one head's attention map "
                            "and the grid of every layer's and head's attention")
    plot.add_argument("--format", default="png", choices=["png", "svg", "pdf"],
                      help="file format of the figures (default: png)")
    plot.add_argument("--prompt", default=None, help="text for the attention maps (default: a validation line)")
    plot.add_argument("--layer", type=_integer(high=1_000_000), default=0, metavar="L",
                      help="encoder layer of the attention map, from 0 (default: 0)")
    plot.add_argument("--head", type=_integer(high=1_000_000), default=0, metavar="H",
                      help="attention head of the attention map, from 0 (default: 0)")
    compare = commands.add_parser(
        "compare", help="overlay several runs' curves in one figure (e.g. two schedules)",
        description="Overlay the training loss, validation cross-entropy, validation top-1 (all masked "
                    "positions and [MASK] only) and learning rate of several runs.")
    compare.add_argument("runs", type=Path, nargs="+", metavar="RUN",
                         help="two or more run directories written by 'scratchmlm train'")
    compare.add_argument("--labels", nargs="+", default=None, metavar="LABEL",
                         help="one legend label per run, in order (default: each run's directory name)")
    compare.add_argument("--out", type=Path, default=None, metavar="FILE",
                         help="where to write the figure (default: compare.png, or compare.FORMAT)")
    compare.add_argument("--format", default=None, choices=["png", "svg", "pdf"],
                         help="file format (default: the extension of --out, else png)")

    check = commands.add_parser("check", help="grade an assignment part: what differs, and the likely bug",
                                description="Run the graded checks of one part (or all) against your code.")
    check.add_argument("part", choices=["masking", "attention", "encoder", "step", "noam", "all"],
                       help="the part to check, or all")
    check.add_argument("--json", action="store_true",
                       help="print one JSON document: every part's items with their points, each part's score "
                            "and the total (for autograders)")
    check.add_argument("--all-or-nothing", action="store_true",
                       help="a part scores all its points when every item passes, else none (default: the "
                            "points of the items that pass)")
    check.add_argument("--seed", type=int, default=None,
                       help="seed of the fresh random inputs of the property items (default: a fixed seed)")
    grade = commands.add_parser(
        "grade", help="teacher: grade a submission on fresh inputs, its code in a separate process",
        description="Grade a student copy: the checks run here with the reference implementation on inputs "
                    "drawn from a fresh seed; the submission's adapters run in their own process and only "
                    "their answers come back. The student's own 'check' is feedback; this is the grade.")
    grade.add_argument("submission", type=Path, help="the student copy (the folder holding scratchmlm/)")
    grade.add_argument("--seed", type=int, default=None,
                       help="seed of the fresh inputs (default: a new random one, printed with the grade)")
    grade.add_argument("--parts", default="all",
                       help="comma-separated parts to grade: masking, attention, encoder, step, noam (default: all)")
    grade.add_argument("--timeout", type=float, default=60.0, metavar="SECONDS",
                       help="wall-clock limit of the submission's code per part (default: 60)")
    grade.add_argument("--format", default="text", choices=["text", "json", "gradescope"],
                       help="text, JSON, or Gradescope's results.json (default: text)")
    grade.add_argument("--json", dest="format", action="store_const", const="json", help="same as --format json")
    grade.add_argument("--out", type=Path, default=None, metavar="FILE",
                       help="write the result to FILE instead of standard output")
    grade.add_argument("--python", default=None, metavar="PATH",
                       help="the interpreter that runs the submission (default: this one)")
    assignment = commands.add_parser("assignment", help="make a student copy with parts blanked out",
                                     description="Classroom assignments from the reference source.")
    assignment_commands = assignment.add_subparsers(dest="assignment_command", required=True, metavar="ACTION")
    make = assignment_commands.add_parser(
        "make", help="write a student copy", description="Write a student copy of scratchmlm in which the chosen "
        "parts raise NotImplementedError, keeping signatures, docstrings and hints.")
    make.add_argument("--tasks", required=True,
                      help="comma-separated parts to blank: masking, attention, encoder, step, noam")
    make.add_argument("--out", type=Path, required=True, help="a new directory for the student copy")
    make.add_argument("--tutorials", action="store_true",
                      help="also copy tutorials 01.. with their exercise answers blanked (.py and .ipynb)")
    return parser


def _run_config(args) -> RunConfig:
    """The configuration: defaults, then --config, then flags."""
    if args.config and args.preset:
        raise ScratchMLMError("Give --config or --preset, not both (flags override either).")
    config = RunConfig.load(args.config) if args.config else preset(args.preset) if args.preset else RunConfig()
    _apply_flags(config, args)
    config.train.validate()
    config.model.validate()
    return config


def _apply_flags(config: RunConfig, args) -> None:
    """Set the settings given as flags (``--d-model 64`` is ``model.d_model``) in ``config``."""
    for key, value in vars(args).items():
        if "." in key and value is not None:
            section, name = key.split(".")
            setattr(getattr(config, section), name, value)


def _new_run_dir() -> Path:
    """A fresh ``runs/<date-time>`` (``-2``, ``-3``, ... when another run started in the same
    second), created here so that no other run can take the name."""
    base = Path("runs") / time.strftime("%Y%m%d-%H%M%S")
    base.parent.mkdir(parents=True, exist_ok=True)
    for number in range(1, 1000):
        candidate = base if number == 1 else base.with_name(f"{base.name}-{number}")
        try:
            candidate.mkdir()
            return candidate
        except FileExistsError:
            continue
    raise ScratchMLMError(f"Too many runs named {base}-N; give --run-dir.")


def cmd_train(args) -> int:
    """One process, or one of several that ``torchrun`` started (see ``distributed.py``)."""
    from .distributed import start_world, stop_world, world_from_environment

    if world_from_environment().distributed and args.run_dir is None:
        raise ScratchMLMError("Several processes train one run: give them its directory with --run-dir.")
    device = vars(args).get("train.device")
    if device is None and args.resume and args.run_dir is not None and (args.run_dir / "config.json").is_file():
        device = RunConfig.load(args.run_dir / "config.json").train.device
    world = start_world(device or "auto")
    try:
        status = _train(args, world)
        world.barrier()       # every rank is done before any tears the process group down
        return status
    finally:
        stop_world(world)


def _train(args, world) -> int:
    from .trainer import Trainer

    if args.resume:
        if args.run_dir is None:
            raise ScratchMLMError("--resume needs --run-dir, the run to continue.")
        if args.config or args.preset:
            raise ScratchMLMError(f"{'--config' if args.config else '--preset'} cannot be combined with --resume: "
                                  "a resumed run keeps the "
                                  "configuration in its config.json.")
        if not (args.run_dir / "config.json").is_file():
            raise ScratchMLMError(f"Cannot resume: {args.run_dir} has no config.json (a run stopped before it "
                                  f"wrote one holds nothing to resume); start it with the command that "
                                  f"started it, without --resume.")
        config = RunConfig.load(args.run_dir / "config.json")
        requested = RunConfig.from_dict(config.to_dict())
        _apply_flags(requested, args)
        check_resumed_config(config.to_dict(), requested.to_dict(), f"in {args.run_dir / 'config.json'}")
        config.train.steps = requested.train.steps
    else:
        config = _run_config(args)
    run_dir = args.run_dir or _new_run_dir()
    trainer = Trainer(config, run_dir, resume=args.resume, progress=not args.quiet, world=world,
                      plots=not args.no_plots)
    if trainer.restarted and world.is_main:
        print(f"scratchmlm: {run_dir} held a run stopped before its first checkpoint (nothing trained yet); "
              f"starting it afresh in place", file=sys.stderr)
    if not world.is_main:           # rank 0 reports; the other ranks only train
        trainer.train()
        return 0 if trainer.stopped_by is None else 128 + int(trainer.stopped_by)
    if args.resume:
        trainer.config.save(run_dir / "config.json")    # the new --steps
    if trainer.unknown_characters:
        listed = ", ".join(f"{char!r} x{count}" for char, count in sorted(trainer.unknown_characters.items()))
        print(f"scratchmlm: {len(trainer.unknown_characters)} character(s) of the new text are not in the vocabulary "
              f"of {trainer.config.train.init_from} and are read as [UNK]: {listed}", file=sys.stderr)
    if not args.quiet:
        processes = f" x {world.world_size} processes" if world.distributed else ""
        print(f"scratchmlm: training {trainer.model.num_parameters():,} parameters on "
              f"{trainer.device}{processes} for {trainer.config.train.steps} steps -> {run_dir}", file=sys.stderr)
    result = trainer.train()
    if not args.quiet:
        print()
        print(trainer.samples(count=6).render(args.color))
        print()
    if trainer.config.train.init_from:
        _print_before_and_after(run_dir)
    if result:
        mask = result["by_kind"]["mask"]["top1"]
        print(f"step {result['step']}: validation top-1 {result['top1']:.3f} "
              f"([MASK] positions {'-' if mask is None else f'{mask:.3f}'}), top-5 {result['top5']:.3f}, "
              f"cross-entropy {result['loss']:.3f} (fingerprint {result['fingerprint'][:12]})")
    print(f"run directory: {run_dir}")
    if trainer.stopped_by is not None:
        last_eval = "none yet" if trainer.last_eval_step is None else f"at step {trainer.last_eval_step}"
        print(f"scratchmlm: stopped at step {trainer.step} by {SIGNAL_NAMES[trainer.stopped_by]}; last "
              f"evaluation {last_eval}; checkpoints/last.pt holds step {trainer.step} "
              f"(continue with --resume)", file=sys.stderr)
        return 128 + int(trainer.stopped_by)
    return 0


def _print_before_and_after(run_dir) -> None:
    """Domain adaptation: the first and the last evaluation on the new text, side by side."""
    from .run_dir import read_metrics

    evals = [r for r in read_metrics(Path(run_dir) / "metrics.jsonl") if r["type"] == "eval"]
    if len(evals) < 2:
        return
    for label, record in (("before", evals[0]), ("after", evals[-1])):
        perplexity = "inf" if record["perplexity"] is None else f"{record['perplexity']:.2f}"
        print(f"{label:>6} (step {record['step']}): perplexity {perplexity}, pseudo-perplexity "
              f"{record.get('pseudo_perplexity', float('nan')):.2f}, top-1 {record['top1']:.3f} on the new text")


def cmd_evaluate(args) -> int:
    from .build import RunData
    from ..evaluate import evaluate, pseudo_perplexity
    from .run_dir import load_run

    model, tokenizer, config, state = load_run(args.run, args.checkpoint, args.device)
    data = RunData.prepare(config.train, tokenizer=tokenizer)
    if data.valid.fingerprint != state.get("valid_fingerprint"):
        raise ScratchMLMError("The data gives a different validation set than the run was trained "
                              "with; evaluate with the same data file.")
    result = evaluate(model, data.valid)
    result.name = f"model @{state['step']}"
    baselines = data.baselines()
    text = args.text if args.text is not None else data.valid_text[:1000]
    what = "the text" if args.text is not None else "the first 1000 validation characters"
    ids = tokenizer.encode(text, strict=args.text is not None, parse_special=False)
    if len(ids) == 0:
        raise ScratchMLMError("--text is empty.")
    pseudo = pseudo_perplexity(model, ids, tokenizer.mask_id, config.train.seq_len)
    if args.json:
        _print_json({
            "run": str(args.run), "step": state["step"], "checkpoint": state.get("checkpoint", args.checkpoint),
            "validation": {"windows": len(data.valid), "seq_len": config.train.seq_len,
                           "scored_positions": result.overall.count, "fingerprint": data.valid.fingerprint},
            "model": result.to_dict(),
            "baselines": {baseline.name: baseline.to_dict() for baseline in baselines},
            "pseudo_perplexity": {"of": what, "characters": len(ids),
                                  "value": pseudo if math.isfinite(pseudo) else None},
        })
        return 0
    print(f"validation set: {len(data.valid)} windows x {config.train.seq_len}, "
          f"{result.overall.count} scored positions, fingerprint {data.valid.fingerprint}")
    for line in [result, *baselines]:
        print(line.summary())
    print(f"pseudo-perplexity of {what}: {pseudo:.3f}")
    return 0


def _validation_prompts(config: RunConfig, count: int, rng) -> list[str]:
    from ..corpus import load_text, split_text
    from ..sample import validation_prompts

    valid_text = split_text(load_text(config.train.data), config.train.seq_len).valid
    return validation_prompts(valid_text, count, config.train.seq_len, rng)


def cmd_sample(args) -> int:
    import torch

    from .build import make_masker
    from .run_dir import load_run
    from ..sample import fill_prompts

    model, tokenizer, config, _ = load_run(args.run, args.checkpoint, args.device)
    rng = torch.Generator().manual_seed(args.seed)
    prompts = args.prompt or _validation_prompts(config, args.count, rng)
    masker = make_masker(tokenizer, config.train)
    samples = fill_prompts(model, tokenizer, prompts, masker, rng, strict=bool(args.prompt))
    if args.json:
        _print_json(samples.to_records())
        return 0
    print(samples.render(args.color))
    return 0


def cmd_fill_mask(args) -> int:
    from .run_dir import load_run
    from ..sample import fill_mask, fill_mask_records, format_fill_mask

    model, tokenizer, _, _ = load_run(args.run, args.checkpoint, args.device)
    predictions = fill_mask(model, tokenizer, args.text, args.top_k)
    if args.json:
        _print_json(fill_mask_records(predictions, tokenizer))
        return 0
    print(format_fill_mask(args.text, predictions))
    return 0


def cmd_export(args) -> int:
    if args.format == "transformers":
        from .hf import export_transformers

        out = export_transformers(args.run, args.out, args.checkpoint)
        for path in sorted(out.iterdir()):
            print(path)
        return 0
    from .run_dir import export_run

    out = export_run(args.run, args.out, args.checkpoint)
    for name in ("model.safetensors", "config.json", "tokenizer.json"):
        print(out / name)
    return 0


def cmd_env(args) -> int:
    from .environment import environment_report, format_environment

    report = environment_report()
    if args.json:
        _print_json(report)
    else:
        print(format_environment(report))
    return 0


def _read_run(path: Path) -> tuple[RunConfig, list[dict]]:
    """A run directory's configuration and metrics records, or an error saying it is not a run."""
    from .run_dir import RunDirectory, read_metrics

    run = RunDirectory(path)
    if not run.path.is_dir():
        raise ScratchMLMError(f"{run.path} does not exist or is not a directory; give a run directory "
                              f"written by 'scratchmlm train'.")
    if not run.config.is_file() or not run.metrics.is_file():
        missing = "config.json" if not run.config.is_file() else "metrics.jsonl"
        raise ScratchMLMError(f"{run.path} is not a scratchmlm run directory (no {missing}).")
    return RunConfig.load(run.config), read_metrics(run.metrics)


def cmd_plot(args) -> int:
    """Curves from metrics.jsonl alone; the attention maps only once a checkpoint exists."""
    import torch

    from .plots import plot_attention_grid_of_text, plot_attention_of_text, plot_noam, plot_training_curves
    from .run_dir import RunDirectory, load_run

    run = RunDirectory(args.run)
    config, records = _read_run(run.path)
    figures = run.plots
    written = []
    if any(r["type"] == "train" for r in records):
        plot_training_curves(records, figures / f"curves.{args.format}", config=config)
        written.append(figures / f"curves.{args.format}")
    plot_noam(config.model.d_model, config.train.warmup, config.train.noam_factor,
              max(config.train.steps, 2 * config.train.warmup), figures / f"noam.{args.format}")
    written.append(figures / f"noam.{args.format}")
    if run.checkpoint(args.checkpoint).is_file():
        model, tokenizer, config, _ = load_run(run.path, args.checkpoint, args.device)
        prompt = args.prompt or _validation_prompts(config, 1, torch.Generator().manual_seed(0))[0]
        one_head = figures / f"attention_layer{args.layer}_head{args.head}.{args.format}"
        plot_attention_of_text(model, tokenizer, prompt, args.layer, args.head, one_head)
        plot_attention_grid_of_text(model, tokenizer, prompt, figures / f"attention_grid.{args.format}")
        written += [one_head, figures / f"attention_grid.{args.format}"]
    else:
        print(f"scratchmlm: no checkpoints/{args.checkpoint}.pt yet, so no attention maps", file=sys.stderr)
    print("\n".join(str(path) for path in written))
    return 0


def cmd_compare(args) -> int:
    """One figure overlaying the curves of several runs, labelled by directory name or --labels."""
    from .plots import FORMATS, plot_comparison

    if len(args.runs) < 2:
        raise ScratchMLMError("compare needs at least two run directories.")
    labels = args.labels or [path.resolve().name for path in args.runs]
    if len(labels) != len(args.runs):
        raise ScratchMLMError(f"--labels gave {len(labels)} labels for {len(args.runs)} runs; give one per run.")
    if len(set(labels)) != len(labels):
        if args.labels:
            raise ScratchMLMError("--labels must all differ, so the legend tells the runs apart.")
        labels = [str(path) for path in args.runs]          # same directory names: say the whole path
    out = args.out or Path(f"compare.{args.format or 'png'}")
    suffix = out.suffix[1:].lower()
    if not suffix:
        out = out.with_name(f"{out.name}.{args.format or 'png'}")
    elif suffix not in FORMATS:
        raise ScratchMLMError(f"--out {out} has the extension .{suffix}; use .png, .svg or .pdf.")
    elif args.format and suffix != args.format:
        raise ScratchMLMError(f"--out {out} has the extension .{suffix} but --format is {args.format}; "
                              f"make them agree.")
    runs = {}
    for label, path in zip(labels, args.runs):
        config, records = _read_run(path)
        runs[label] = (records, config)
    plot_comparison(runs, out)
    print(out)
    return 0


def cmd_check(args) -> int:
    """Exit 0 when every checked part passes, 1 when one fails. Whatever the code under test does
    (raise, print, hang past the checks' time limits), ``--json`` prints one complete document."""
    import contextlib
    import importlib

    from ..classroom.checks import PARTS, Item, Report
    from ..classroom.checks.guard import failure

    parts = list(PARTS) if args.part == "all" else [args.part]
    reports = []
    # Whatever your code prints goes to stderr, so that stdout holds only the report.
    with contextlib.redirect_stdout(sys.stderr) if args.json else contextlib.nullcontext():
        for part in parts:
            try:
                report = PARTS[part](seed=args.seed)
            except Exception as error:                  # noqa: BLE001  (a check must never lose the others)
                module = importlib.import_module(f"scratchmlm.classroom.checks.{part}")
                report = Report(module.PART, module.TITLE, module.POINTS)
                failed = failure(error)
                report.add(Item("the check could not run", False, f"{failed.reason}\nat {failed.where}"))
            report.all_or_nothing = args.all_or_nothing
            reports.append(report)
    total, max_total = round(sum(r.score for r in reports), 2), sum(r.points for r in reports)
    if args.json:
        print(json.dumps({"parts": [report.to_dict() for report in reports], "score": total, "points": max_total,
                          "passed": all(report.passed for report in reports),
                          "all_or_nothing": args.all_or_nothing}, indent=2, ensure_ascii=False, default=str))
    else:
        print("\n\n".join(report.to_text() for report in reports))
        if len(reports) > 1:
            print(f"\ntotal: {total:g}/{max_total} points")
    return 0 if all(report.passed for report in reports) else 1


def cmd_grade(args) -> int:
    """Exit 0 when every graded part passes, 1 when one fails."""
    import json

    try:
        from ..classroom.checks.grade import grade
    except ImportError:
        raise ScratchMLMError("'scratchmlm grade' is the teacher's: run it from the reference checkout (a student "
                              "copy leaves the grader out).") from None
    parts = None if args.parts == "all" else [part.strip() for part in args.parts.split(",") if part.strip()]
    result = grade(args.submission, seed=args.seed, parts=parts, timeout=args.timeout, python=args.python)
    if args.format == "text":
        text = result.to_text()
    else:
        text = json.dumps(result.to_gradescope() if args.format == "gradescope" else result.to_dict(), indent=2,
                          ensure_ascii=False)
    if args.out is None:
        print(text)
    else:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(args.out, text + "\n", "grade report")
        print(f"{result.score:g}/{result.max_score:g} points, seed {result.seed}: wrote {args.out}")
    return 0 if result.passed else 1


def cmd_assignment(args) -> int:
    from ..classroom.assignment import make_assignment, parse_tasks

    tasks = parse_tasks(args.tasks)
    blanked = make_assignment(tasks, args.out, tutorials=args.tutorials)
    print(f"wrote the student copy to {args.out}; blanked: "
          + ", ".join(str(path.relative_to(args.out)) for path in blanked))
    print(f"students: see {args.out / 'ASSIGNMENT.md'}")
    return 0


COMMANDS = {"train": cmd_train, "evaluate": cmd_evaluate, "sample": cmd_sample,
            "fill-mask": cmd_fill_mask, "plot": cmd_plot, "compare": cmd_compare,
            "check": cmd_check, "grade": cmd_grade, "assignment": cmd_assignment, "export": cmd_export, "env": cmd_env}


def main(argv: list[str] | None = None) -> int:
    """Run one command; every failure is one line on stderr and a non-zero exit status.

    Ctrl-C and SIGTERM are caught from the very start (exit 130 / 143, one line): during start-up,
    before a training loop takes them over, they stop the command where it is."""
    previous_sigterm = None
    try:
        if threading.current_thread() is threading.main_thread():
            previous_sigterm = signal.signal(signal.SIGTERM, raise_terminated)
        args = build_parser().parse_args(argv)
        check_arguments(args)
        return COMMANDS[args.command](args)
    except ScratchMLMError as error:
        return _fail(str(error), 2)
    except KeyboardInterrupt:
        print("scratchmlm: interrupted", file=sys.stderr)
        return 130
    except Terminated:
        print("scratchmlm: stopped by SIGTERM", file=sys.stderr)
        return 143
    except OSError as error:        # disk full, file too large, permission denied, ...
        where = f" ({error.filename})" if error.filename else ""
        return _fail(f"{error.strerror or error}{where}. Files written before this error are kept.", 1)
    except MemoryError:
        return _fail("out of memory: lower --batch-size, --seq-len or the model size.", 1)
    except RecursionError:
        return _fail("an input file is nested too deeply to be read.", 2)
    except RuntimeError as error:   # torch's allocator: "DefaultCPUAllocator: can't allocate memory"
        if "allocate" not in str(error) and "out of memory" not in str(error):
            raise
        return _fail(f"out of memory ({str(error).splitlines()[0][:160]}): lower --batch-size, "
                     f"--seq-len or the model size.", 1)
    finally:
        if previous_sigterm is not None:
            signal.signal(signal.SIGTERM, previous_sigterm)


def _fail(message: str, status: int) -> int:
    print(f"scratchmlm: error: {message}", file=sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(main())
