"""Domain adaptation: continue a Shakespeare model's pre-training on a text of another kind.

The new text is a naturalist's logbook that ``make_domain_text.py`` generates (300,000
characters; we wrote its generator, so nothing here is anyone else's text). Three models are
scored on the logbook's frozen validation set (masked once, as always) by perplexity over the
masked positions and by pseudo-perplexity (every character of the first 1000 masked in turn):

* **before**: the Shakespeare model as it is (``--source``, by default the demo model that ships
  with scratchmlm: 2500 steps on Tiny Shakespeare);
* **adapted**: the same model after ``--steps`` more steps on the logbook
  (``scratchmlm train --init-from SOURCE --data logbook.txt``);
* **from scratch**: a fresh model trained for the same steps on the logbook alone.

The vocabulary stays the Shakespeare one: the digits it lacks (all but '3') are reported and read
as [UNK]. The adapted model is also scored on Tiny Shakespeare again, to show what it forgets.

Expected outcome: the logbook's perplexity **falls several-fold after adaptation** (as continued
pre-training lowers a movie-review perplexity from 21.75 to 11.32 in the classic example), the
adapted model **beats the one trained from scratch** for the same number of steps (it starts
from knowing English spelling), and its Shakespeare top-1 drops a few points.

    python experiments/domain_adaptation.py [--steps 1000] [--seeds 0 1]
"""

import json
import tempfile
import time
from pathlib import Path

from common import parse_arguments, seed_validation_set
from make_domain_text import generate
from tqdm.auto import tqdm

from scratchmlm.harness.build import RunData
from scratchmlm.harness.config import preset
from scratchmlm.evaluate import evaluate, pseudo_perplexity
from scratchmlm.classroom.notebook import demo_run_dir
from scratchmlm.harness.run_dir import load_run
from scratchmlm.harness.trainer import Trainer


def scores(model, tokenizer, train_config) -> dict:
    """Perplexity on the frozen set of ``train_config.data`` and pseudo-perplexity of its first
    1000 validation tokens, for ``model`` reading ``tokenizer``'s ids."""
    data = RunData.prepare(train_config, tokenizer=tokenizer)
    result = evaluate(model, data.valid)
    ids = tokenizer.encode(data.valid_text, parse_special=False)[:1000]
    return {"perplexity": result.overall.perplexity, "top1": result.overall.top1,
            "pseudo_perplexity": pseudo_perplexity(model, ids, tokenizer.mask_id, train_config.seq_len),
            "fingerprint": data.valid.fingerprint}


def main() -> None:
    parser_args = parse_arguments(__doc__.splitlines()[0], steps=1000)
    root = parser_args.out or Path(tempfile.mkdtemp(prefix="scratchmlm-domain-"))
    root.mkdir(parents=True, exist_ok=True)
    logbook = root / "logbook.txt"
    logbook.write_text(generate(300_000, seed=0), encoding="utf-8")
    source = demo_run_dir()
    shakespeare, _ = seed_validation_set()
    rows = []
    for seed in tqdm(parser_args.seeds, desc="seeds", unit="seed"):
        adapted_config = preset("fast")
        adapted_config.train.data, adapted_config.train.init_from = str(logbook), str(source)
        adapted_config.train.steps, adapted_config.train.seed = parser_args.steps, seed
        adapted_config.train.warmup, adapted_config.train.device = 100, parser_args.device
        adapted_config.train.eval_every = adapted_config.train.sample_every = parser_args.steps
        started = time.perf_counter()
        adapted = Trainer(adapted_config, root / f"adapted-seed{seed}")
        adapted.train()
        adapt_seconds = time.perf_counter() - started
        scratch_config = preset("fast")
        scratch_config.train.data, scratch_config.train.steps, scratch_config.train.seed = str(logbook), \
            parser_args.steps, seed
        scratch_config.train.device = parser_args.device
        scratch_config.train.eval_every = scratch_config.train.sample_every = parser_args.steps
        started = time.perf_counter()
        Trainer(scratch_config, root / f"scratch-seed{seed}").train()
        scratch_seconds = time.perf_counter() - started

        before, tokenizer, _, _ = load_run(source, "best", parser_args.device)
        after = load_run(root / f"adapted-seed{seed}", "last", parser_args.device)[0]
        scratch, scratch_tokenizer, _, _ = load_run(root / f"scratch-seed{seed}", "last", parser_args.device)
        rows.append({
            "seed": seed, "unknown_characters": adapted.unknown_characters,
            "before": scores(before, tokenizer, adapted.config.train),
            "adapted": scores(after, tokenizer, adapted.config.train), "adapted_seconds": adapt_seconds,
            "scratch": scores(scratch, scratch_tokenizer, scratch_config.train), "scratch_seconds": scratch_seconds,
            "shakespeare_top1_before": evaluate(before, shakespeare).overall.top1,
            "shakespeare_top1_after": evaluate(after, shakespeare).overall.top1,
        })
    unknown = rows[0]["unknown_characters"]
    print(f"\nlogbook: {len(logbook.read_text()):,} characters; not in the Shakespeare vocabulary (read as "
          f"[UNK]): {', '.join(f'{c!r} x{n}' for c, n in sorted(unknown.items()))}")
    print(f"{'seed':>4} {'model':<30} {'perplexity':>10} {'pseudo-ppl':>10} {'top-1':>6} {'Shakespeare top-1':>18}")
    for row in rows:
        for label, key, shakespeare_top1 in (
                ("before (Shakespeare demo)", "before", row["shakespeare_top1_before"]),
                (f"adapted (+{parser_args.steps} steps)", "adapted", row["shakespeare_top1_after"]),
                (f"from scratch ({parser_args.steps} steps)*", "scratch", None)):
            s = row[key]
            print(f"{row['seed']:>4} {label:<30} {s['perplexity']:>10.2f} {s['pseudo_perplexity']:>10.2f} "
                  f"{s['top1']:>6.3f} {'-' if shakespeare_top1 is None else f'{shakespeare_top1:.3f}':>18}")
    print(f"* its own vocabulary (the logbook's characters, digits included), so its frozen set differs "
          f"(fingerprint {rows[0]['scratch']['fingerprint'][:12]} against {rows[0]['before']['fingerprint'][:12]})")
    print(f"wall time per seed: adapted {rows[0]['adapted_seconds']:.0f} s, from scratch "
          f"{rows[0]['scratch_seconds']:.0f} s")
    out = parser_args.results / "domain_adaptation"
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps({"steps": parser_args.steps, "seeds": parser_args.seeds,
                                                  "source": "scratchmlm/demo", "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
