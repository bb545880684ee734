"""The command line: ``scratchmlm train | evaluate | sample | fill-mask | plot | check | assignment``.

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
import sys
import time
from pathlib import Path

from .config import ModelConfig, RunConfig, TrainConfig
from .errors import ScratchMLMError
from .interrupt import SIGNAL_NAMES


def _parse_bool(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _add_config_flags(parser: argparse.ArgumentParser, config_class, group_title: str) -> None:
    """One flag per field of ``config_class``, with the field's help text and choices."""
    group = parser.add_argument_group(f"{group_title} settings")
    for field in dataclasses.fields(config_class):
        if field.name == "vocab_size":
            continue  # always taken from the data
        kind = {"bool": _parse_bool, "int": int, "float": float, "str": str}[field.type]
        choices = field.metadata.get("choices")
        group.add_argument("--" + field.name.replace("_", "-"), dest=f"{group_title}.{field.name}",
                           type=kind, default=None, choices=choices,
                           metavar=None if choices else {"bool": "BOOL", "int": "N", "float": "X"}.get(field.type, "TEXT"),
                           help=f"{field.metadata['help']} (default: {field.default})")


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="scratchmlm",
        description="A from-scratch BERT-style masked language model, trained character by character.",
        epilog="Example: scratchmlm train --steps 300 --run-dir runs/quick && "
               "scratchmlm sample runs/quick")
    parser.add_argument("--version", action="version", version=f"scratchmlm {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    train = commands.add_parser("train", help="train a model (the seed configuration by default)",
                                description="Train the masked language model and print coloured samples.")
    train.add_argument("--run-dir", type=Path, default=None,
                       help="where config, metrics, checkpoints, samples and plots go "
                            "(default: runs/<date-time>)")
    train.add_argument("--config", type=Path, help='JSON file {"model": {...}, "train": {...}}; flags override it')
    train.add_argument("--resume", action="store_true",
                       help="continue the run in --run-dir exactly where its last checkpoint left off")
    train.add_argument("--color", default="auto", choices=["auto", "always", "never"],
                       help="colour the samples: auto = only on a terminal without NO_COLOR (default: auto)")
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
    sample = with_run("sample", "fill masked validation lines (or your prompts) and colour them by correctness")
    sample.add_argument("--prompt", action="append", default=None,
                        help="your own prompt (repeatable); a literal [MASK] marks what to fill")
    sample.add_argument("--count", type=int, default=8, metavar="N",
                        help="number of validation prompts (default: 8)")
    sample.add_argument("--seed", type=int, default=0, metavar="N",
                        help="seed of the prompt choice and the masks (default: 0)")
    sample.add_argument("--color", default="auto", choices=["auto", "always", "never"],
                        help="auto = only on a terminal without NO_COLOR (default: auto)")
    fill = with_run("fill-mask", "top-k characters with probabilities for every [MASK] in TEXT")
    fill.add_argument("text", help='e.g. "To be, or not to b[MASK]"')
    fill.add_argument("--top-k", type=int, default=5, metavar="K",
                      help="candidates shown per [MASK] (default: 5)")
    plot = with_run("plot", "write loss/accuracy/lr/grad-norm curves, the Noam curve and an attention map")
    plot.add_argument("--prompt", default=None, help="text for the attention map (default: a validation line)")
    plot.add_argument("--layer", type=int, default=0, metavar="L",
                      help="encoder layer of the attention map, from 0 (default: 0)")
    plot.add_argument("--head", type=int, default=0, metavar="H",
                      help="attention head of the attention map, from 0 (default: 0)")

    check = commands.add_parser("check", help="grade an assignment part: what differs, and the likely bug",
                                description="Run the graded checks of one part (or all) against your code.")
    check.add_argument("part", choices=["masking", "attention", "encoder", "step", "noam", "all"],
                       help="the part to check, or all")
    check.add_argument("--json", action="store_true", help="print the report as JSON (for autograders)")
    assignment = commands.add_parser("assignment", help="make a student copy with parts blanked out",
                                     description="Classroom assignments from the reference source.")
    assignment_commands = assignment.add_subparsers(dest="assignment_command", required=True, metavar="ACTION")
    make = assignment_commands.add_parser(
        "make", help="write a student copy", description="Write a student copy of scratchmlm in which the chosen "
        "parts raise NotImplementedError, keeping signatures, docstrings and hints.")
    make.add_argument("--tasks", required=True,
                      help="comma-separated parts to blank: masking, attention, encoder, step, noam")
    make.add_argument("--out", type=Path, required=True, help="a new directory for the student copy")
    return parser


def _run_config(args) -> tuple[RunConfig, dict]:
    """The configuration: defaults, then --config, then flags; and the flags that were given."""
    config = RunConfig.load(args.config) if args.config else RunConfig()
    overrides = {key: value for key, value in vars(args).items() if "." in key and value is not None}
    for key, value in overrides.items():
        section, name = key.split(".")
        setattr(getattr(config, section), name, value)
    config.train.validate()
    config.model.validate()
    return config, overrides


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
    from .trainer import Trainer

    if args.resume:
        if args.run_dir is None:
            raise ScratchMLMError("--resume needs --run-dir, the run to continue.")
        if args.config:
            raise ScratchMLMError("--config cannot be combined with --resume: a resumed run keeps the "
                                  "configuration in its config.json.")
        if not (args.run_dir / "config.json").is_file():
            raise ScratchMLMError(f"Cannot resume: {args.run_dir} has no config.json.")
        config = RunConfig.load(args.run_dir / "config.json")
        _, overrides = _run_config(args)
        changed = sorted(k for k in overrides if k != "train.steps")
        if changed:
            raise ScratchMLMError(f"A resumed run keeps its configuration; only --steps may change "
                                  f"(got {', '.join('--' + k.split('.')[1].replace('_', '-') for k in changed)}).")
        config.train.steps = overrides.get("train.steps", config.train.steps)
    else:
        config, _ = _run_config(args)
    run_dir = args.run_dir or _new_run_dir()
    trainer = Trainer(config, run_dir, resume=args.resume)
    if args.resume:
        trainer.config.save(run_dir / "config.json")    # the new --steps
    print(f"scratchmlm: training {trainer.model.num_parameters():,} parameters on "
          f"{trainer.device} for {trainer.config.train.steps} steps -> {run_dir}", file=sys.stderr)
    result = trainer.train()
    print()
    print(trainer.samples(count=6).render(args.color))
    if result:
        mask = result["by_kind"]["mask"]["top1"]
        print(f"\nstep {result['step']}: validation top-1 {result['top1']:.3f} "
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


def cmd_evaluate(args) -> int:
    from .build import RunData
    from .evaluate import evaluate, pseudo_perplexity
    from .run_dir import load_run

    model, tokenizer, config, state = load_run(args.run, args.checkpoint, args.device)
    data = RunData.prepare(config.train, tokenizer=tokenizer)
    if data.valid.fingerprint != state.get("valid_fingerprint"):
        raise ScratchMLMError("The data gives a different validation set than the run was trained "
                              "with; evaluate with the same data file.")
    result = evaluate(model, data.valid)
    result.name = f"model @{state['step']}"
    print(f"validation set: {len(data.valid)} windows x {config.train.seq_len}, "
          f"{result.overall.count} scored positions, fingerprint {data.valid.fingerprint}")
    for line in [result, *data.baselines()]:
        print(line.summary())
    text = args.text if args.text is not None else data.valid_text[:1000]
    what = "the text" if args.text is not None else "the first 1000 validation characters"
    ids = tokenizer.encode(text, strict=True, parse_special=False)
    if len(ids) == 0:
        raise ScratchMLMError("--text is empty.")
    print(f"pseudo-perplexity of {what}: "
          f"{pseudo_perplexity(model, ids, tokenizer.mask_id, config.train.seq_len):.3f}")
    return 0


def _validation_prompts(config: RunConfig, count: int, rng) -> list[str]:
    from .corpus import load_text, split_text
    from .sample import validation_prompts

    valid_text = split_text(load_text(config.train.data), config.train.seq_len).valid
    return validation_prompts(valid_text, count, config.train.seq_len, rng)


def cmd_sample(args) -> int:
    import torch

    from .masking import BertMasker
    from .run_dir import load_run
    from .sample import fill_prompts

    model, tokenizer, config, _ = load_run(args.run, args.checkpoint, args.device)
    rng = torch.Generator().manual_seed(args.seed)
    prompts = args.prompt or _validation_prompts(config, args.count, rng)
    masker = BertMasker.from_config(tokenizer, config.train)
    print(fill_prompts(model, tokenizer, prompts, masker, rng).render(args.color))
    return 0


def cmd_fill_mask(args) -> int:
    from .run_dir import load_run
    from .sample import fill_mask, format_fill_mask

    model, tokenizer, _, _ = load_run(args.run, args.checkpoint, args.device)
    print(format_fill_mask(args.text, fill_mask(model, tokenizer, args.text, args.top_k)))
    return 0


def cmd_plot(args) -> int:
    """Curves from metrics.jsonl alone; the attention map only once a checkpoint exists."""
    import torch

    from .plots import plot_attention_of_text, plot_noam, plot_training_curves
    from .run_dir import RunDirectory, load_run, read_metrics

    run = RunDirectory(args.run)
    if not run.config.is_file():
        raise ScratchMLMError(f"{run.path} is not a scratchmlm run directory (no config.json).")
    config = RunConfig.load(run.config)
    written = []
    records = read_metrics(run.metrics)
    if any(r["type"] == "train" for r in records):
        plot_training_curves(records, run.plots / "curves.png")
        written.append(run.plots / "curves.png")
    plot_noam(config.model.d_model, config.train.warmup, config.train.noam_factor,
              max(config.train.steps, 2 * config.train.warmup), run.plots / "noam.png")
    written.append(run.plots / "noam.png")
    if run.checkpoint(args.checkpoint).is_file():
        model, tokenizer, config, _ = load_run(run.path, args.checkpoint, args.device)
        prompt = args.prompt or _validation_prompts(config, 1, torch.Generator().manual_seed(0))[0]
        plot_attention_of_text(model, tokenizer, prompt, args.layer, args.head, run.plots / "attention.png")
        written.append(run.plots / "attention.png")
    else:
        print(f"scratchmlm: no checkpoints/{args.checkpoint}.pt yet, so no attention map", file=sys.stderr)
    print("\n".join(str(path) for path in written))
    return 0


def cmd_check(args) -> int:
    """Exit 0 when every checked part passes, 1 when one fails."""
    import json

    from .checks import PARTS

    parts = list(PARTS) if args.part == "all" else [args.part]
    reports = [PARTS[part]() for part in parts]
    if args.json:
        print(json.dumps([report.to_dict() for report in reports] if args.part == "all" else reports[0].to_dict(),
                         indent=2, ensure_ascii=False))
    else:
        print("\n\n".join(report.to_text() for report in reports))
        if len(reports) > 1:
            print(f"\ntotal: {sum(r.score for r in reports)}/{sum(r.points for r in reports)} points")
    return 0 if all(report.passed for report in reports) else 1


def cmd_assignment(args) -> int:
    from .assignment import make_assignment, parse_tasks

    tasks = parse_tasks(args.tasks)
    blanked = make_assignment(tasks, args.out)
    print(f"wrote the student copy to {args.out}; blanked: "
          + ", ".join(str(path.relative_to(args.out)) for path in blanked))
    print(f"students: see {args.out / 'ASSIGNMENT.md'}")
    return 0


COMMANDS = {"train": cmd_train, "evaluate": cmd_evaluate, "sample": cmd_sample,
            "fill-mask": cmd_fill_mask, "plot": cmd_plot, "check": cmd_check, "assignment": cmd_assignment}


def main(argv: list[str] | None = None) -> int:
    """Run one command; every failure is one line on stderr and a non-zero exit status."""
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except ScratchMLMError as error:
        return _fail(str(error), 2)
    except KeyboardInterrupt:
        print("scratchmlm: interrupted", file=sys.stderr)
        return 130
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


def _fail(message: str, status: int) -> int:
    print(f"scratchmlm: error: {message}", file=sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(main())
