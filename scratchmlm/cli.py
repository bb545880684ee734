"""The command line: ``scratchmlm train | evaluate | sample | fill-mask | plot``.

Every ``ModelConfig`` / ``TrainConfig`` field is a flag of ``train`` (``--d-model 256``,
``--steps 500``, ...), on top of an optional ``--config file.json``. Errors the user can fix are
printed as one line (``scratchmlm: error: ...``) with exit status 2, never as a traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

from .config import ModelConfig, RunConfig, TrainConfig
from .errors import ScratchMLMError

HELP = {
    "data": "corpus: 'tinyshakespeare' (downloaded and verified) or the path of any UTF-8 text file",
    "steps": "optimizer steps to train for (a resumed run continues up to this number)",
    "device": "auto | cpu | cuda",
    "seed": "one seed for initialisation, batches, masking and dropout",
    "fused_attention": "use torch's fused attention kernel (same math as the written-out one)",
    "early_stopping_patience": "stop after this many evaluations without a better validation loss (0: off)",
    "norm_first": "pre-norm (true) or post-norm (false) encoder layers",
    "warmup": "Noam warm-up steps: the learning rate peaks at factor * (d_model * warmup)^-0.5",
    "noam_factor": "scales the whole Noam schedule",
    "select_prob": "share of positions the masker selects for prediction",
    "mask_token_prob": "of the selected, the share shown as [MASK]",
    "random_token_prob": "of the selected, the share replaced by a random character (the rest stay unchanged)",
    "clip_norm": "clip the global gradient norm to this",
    "eval_every": "evaluate on the frozen validation set and checkpoint every N steps",
    "sample_every": "write samples every N steps",
    "log_every": "log training loss/accuracy/lr/grad-norm to metrics.jsonl every N steps",
    "valid_windows": "number of fixed validation windows",
    "max_len": "longest sequence the position table covers (at least --seq-len)",
    "positional": "sinusoidal or learned",
    "activation": "gelu or relu",
}


def _parse_bool(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _add_config_flags(parser: argparse.ArgumentParser, config_class, group_title: str) -> None:
    group = parser.add_argument_group(group_title)
    for field in dataclasses.fields(config_class):
        if field.name == "vocab_size":
            continue  # always taken from the data
        kind = _parse_bool if field.type in ("bool", bool) else {"int": int, "float": float}.get(field.type, str)
        group.add_argument("--" + field.name.replace("_", "-"), dest=f"{group_title}.{field.name}",
                           type=kind, default=None,
                           metavar={"bool": "BOOL", "int": "N", "float": "X"}.get(field.type, "TEXT"),
                           help=f"{HELP.get(field.name, '')} (default: {field.default})".strip())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="scratchmlm",
        description="A from-scratch BERT-style masked language model, trained character by character.",
        epilog="Example: scratchmlm train --steps 300 --run-dir runs/quick && "
               "scratchmlm sample runs/quick")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    train = commands.add_parser("train", help="train a model (the seed configuration by default)",
                                description="Train the masked language model and print coloured samples.")
    train.add_argument("--run-dir", type=Path, default=None,
                       help="where config, metrics, checkpoints, samples and plots go "
                            "(default: runs/<date-time>)")
    train.add_argument("--config", type=Path, help='JSON file {"model": {...}, "train": {...}}; flags override it')
    train.add_argument("--resume", action="store_true",
                       help="continue the run in --run-dir exactly where its last checkpoint left off")
    train.add_argument("--color", default="auto", choices=["auto", "always", "never"])
    _add_config_flags(train, TrainConfig, "train")
    _add_config_flags(train, ModelConfig, "model")

    def with_run(name, help_text):
        command = commands.add_parser(name, help=help_text, description=help_text)
        command.add_argument("run", type=Path, help="a run directory written by 'scratchmlm train'")
        command.add_argument("--checkpoint", default="best", choices=["best", "last"])
        command.add_argument("--device", default="cpu", help="auto | cpu | cuda (default: cpu)")
        return command

    evaluate = with_run("evaluate", "score a run on the frozen validation set, beside the baselines")
    evaluate.add_argument("--text", default=None,
                          help="also print the pseudo-perplexity of this text (each character masked in turn)")
    sample = with_run("sample", "fill masked validation lines (or your prompts) and colour them by correctness")
    sample.add_argument("--prompt", action="append", default=None,
                        help="your own prompt (repeatable); a literal [MASK] marks what to fill")
    sample.add_argument("--count", type=int, default=8, help="number of validation prompts (default 8)")
    sample.add_argument("--seed", type=int, default=0)
    sample.add_argument("--color", default="auto", choices=["auto", "always", "never"])
    fill = with_run("fill-mask", "top-k characters with probabilities for every [MASK] in TEXT")
    fill.add_argument("text", help='e.g. "To be, or not to b[MASK]"')
    fill.add_argument("--top-k", type=int, default=5)
    plot = with_run("plot", "write loss/accuracy/lr/grad-norm curves, the Noam curve and an attention map")
    plot.add_argument("--prompt", default=None, help="text for the attention map (default: a validation line)")
    plot.add_argument("--layer", type=int, default=0)
    plot.add_argument("--head", type=int, default=0)
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


def cmd_train(args) -> int:
    from .train import Trainer

    run_dir = args.run_dir or Path("runs") / time.strftime("%Y%m%d-%H%M%S")
    if args.resume:
        if args.run_dir is None:
            raise ScratchMLMError("--resume needs --run-dir, the run to continue.")
        if args.config:
            raise ScratchMLMError("--config cannot be combined with --resume: a resumed run keeps the "
                                  "configuration in its config.json.")
        if not (run_dir / "config.json").is_file():
            raise ScratchMLMError(f"Cannot resume: {run_dir} has no config.json.")
        config = RunConfig.load(run_dir / "config.json")
        _, overrides = _run_config(args)
        changed = sorted(k for k in overrides if k != "train.steps")
        if changed:
            raise ScratchMLMError(f"A resumed run keeps its configuration; only --steps may change "
                                  f"(got {', '.join('--' + k.split('.')[1].replace('_', '-') for k in changed)}).")
        config.train.steps = overrides.get("train.steps", config.train.steps)
    else:
        config, _ = _run_config(args)
    trainer = Trainer(config, run_dir, resume=args.resume)
    if args.resume:
        config.save(run_dir / "config.json")
    print(f"scratchmlm: training {trainer.model.num_parameters():,} parameters on "
          f"{trainer.device} for {config.train.steps} steps -> {run_dir}", file=sys.stderr)
    result = trainer.train()
    print()
    print(trainer.samples(count=6).render(args.color))
    if result:
        print(f"\nstep {trainer.step}: validation top-1 {result['top1']:.3f}, top-5 {result['top5']:.3f}, "
              f"cross-entropy {result['loss']:.3f} (fingerprint {result['fingerprint'][:12]})")
    print(f"run directory: {run_dir}")
    return 0


def cmd_evaluate(args) -> int:
    from .evaluate import bigram_infill_baseline, evaluate, pseudo_perplexity, unigram_baseline
    from .train import RunData, load_run

    model, tokenizer, config, state = load_run(args.run, args.checkpoint, args.device)
    data = RunData.prepare(config.train, tokenizer=tokenizer)
    if data.valid.fingerprint != state["valid_fingerprint"]:
        raise ScratchMLMError("The data gives a different validation set than the run was trained "
                              "with; evaluate with the same data file.")
    valid = data.valid
    result = evaluate(model, valid)
    result.name = f"model @{state['step']}"
    print(f"validation set: {len(valid)} windows x {config.train.seq_len}, "
          f"{result.overall.count} scored positions, fingerprint {valid.fingerprint}")
    for line in (result,
                 bigram_infill_baseline(data.train_ids, valid, tokenizer.vocab_size, tokenizer.mask_id),
                 unigram_baseline(data.train_ids, valid, tokenizer.vocab_size)):
        print(line.summary())
    text = args.text if args.text is not None else data.valid_text[:1000]
    what = "the text" if args.text is not None else "the first 1000 validation characters"
    ids = tokenizer.encode(text, strict=True, parse_special=False)
    if len(ids) == 0:
        raise ScratchMLMError("--text is empty.")
    print(f"pseudo-perplexity of {what}: "
          f"{pseudo_perplexity(model, ids, tokenizer.mask_id, config.train.seq_len):.3f}")
    return 0


def cmd_sample(args) -> int:
    import torch

    from .corpus import load_text, split_text
    from .masking import BertMasker
    from .sample import fill_prompts, validation_prompts
    from .train import load_run

    model, tokenizer, config, _ = load_run(args.run, args.checkpoint, args.device)
    generator = torch.Generator().manual_seed(args.seed)
    prompts = args.prompt
    if not prompts:
        valid_text = split_text(load_text(config.train.data), config.train.seq_len).valid
        prompts = validation_prompts(valid_text, args.count, config.train.seq_len, generator)
    masker = BertMasker.from_config(tokenizer, config.train)
    print(fill_prompts(model, tokenizer, prompts, masker, generator).render(args.color))
    return 0


def cmd_fill_mask(args) -> int:
    from .sample import fill_mask, format_fill_mask
    from .train import load_run

    model, tokenizer, _, _ = load_run(args.run, args.checkpoint, args.device)
    print(format_fill_mask(args.text, fill_mask(model, tokenizer, args.text, args.top_k)))
    return 0


def cmd_plot(args) -> int:
    import torch

    from .corpus import load_text, split_text
    from .plots import plot_attention, plot_noam, plot_training_curves
    from .sample import encode_prompt, validation_prompts
    from .train import load_run, read_metrics

    records = read_metrics(args.run / "metrics.jsonl")
    model, tokenizer, config, _ = load_run(args.run, args.checkpoint, args.device)
    if not (0 <= args.layer < config.model.num_layers and 0 <= args.head < config.model.num_heads):
        raise ScratchMLMError(f"--layer must be in 0..{config.model.num_layers - 1} and --head in "
                              f"0..{config.model.num_heads - 1}.")
    out = args.run / "plots"
    plot_training_curves(records, out / "curves.png")
    plot_noam(config.model.d_model, config.train.warmup, config.train.noam_factor,
              max(config.train.steps, 2 * config.train.warmup), out / "noam.png")
    written = [out / "curves.png", out / "noam.png"]
    prompt = args.prompt
    if prompt is None:
        valid = split_text(load_text(config.train.data), config.train.seq_len).valid
        prompt = validation_prompts(valid, 1, config.train.seq_len, torch.Generator().manual_seed(0))[0]
    ids = encode_prompt(tokenizer, model, prompt)
    with torch.no_grad():
        _, attention = model(ids[None].to(next(model.parameters()).device), return_attention=True)
    tokens = [tokenizer.vocab[i] for i in ids.tolist()]
    plot_attention(attention[args.layer][0, args.head].cpu(), tokens, out / "attention.png",
                   title=f"layer {args.layer}, head {args.head}")
    written.append(out / "attention.png")
    print("\n".join(str(path) for path in written))
    return 0


COMMANDS = {"train": cmd_train, "evaluate": cmd_evaluate, "sample": cmd_sample,
            "fill-mask": cmd_fill_mask, "plot": cmd_plot}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except ScratchMLMError as error:
        print(f"scratchmlm: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("scratchmlm: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
