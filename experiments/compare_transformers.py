"""scratchmlm's BERT against Hugging Face's ``BertForMaskedLM``, trained side by side.

Four models in one process on one machine:

    scratchmlm BERT      ``--preset bert``: ``BertMLM``, written out in scratchmlm's own modules
    transformers BERT    ``transformers.BertForMaskedLM`` of the same configuration, starting from the
                         very same weights (``scratchmlm.harness.hf.to_transformers``)
    seed                 the seed ``TransformerMLM`` (the defaults)
    fast                 ``--preset fast`` (the seed model, dropout 0, warm-up 500)

Every model is trained by the same loop (``scratchmlm.loop.train_loop``) on the same batches
(windows and masks drawn from generators seeded alike, BERT's masker) and scored on the same frozen validation set
(Tiny Shakespeare's last 10%, the seed configuration's 1024 windows and masks). Each uses its preset's
optimizer and Noam schedule; the two BERTs share theirs, so between them only the model differs.
They train in turns, ``--eval-every`` steps each per round, so a noisy machine slows all of them alike.

It prints each model's training tokens/s (evaluation excluded) and its ratio to the transformers
BERT's, and the validation top-1 / [MASK]-position top-1 of every model at the same steps. With
``--until 0.630`` each model stops at the first evaluation that reaches that validation top-1, and the
table gives the training seconds and steps it took. Usage::

    python experiments/compare_transformers.py --steps 6000 --until 0.630     # the full comparison
    python experiments/compare_transformers.py --steps 20 --eval-every 10      # a smoke run
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from scratchmlm.harness.build import RunData, build_model, derive_seeds, make_optimizer, resolve_device
from scratchmlm.harness.config import RunConfig, TrainConfig, preset
from scratchmlm.evaluate import evaluate
from scratchmlm.harness.hf import to_transformers
from scratchmlm.loop import train_loop
from scratchmlm.noam import NoamScheduler


class TransformersLogits(nn.Module):
    """A ``BertForMaskedLM`` called as scratchmlm calls a model: ``model(ids) -> logits``."""

    def __init__(self, bert):
        super().__init__()
        self.bert = bert

    def forward(self, ids: torch.Tensor, key_padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        attention_mask = None if key_padding_mask is None else (~key_padding_mask).long()
        return self.bert(input_ids=ids, attention_mask=attention_mask).logits


@dataclass
class Arm:
    """One model and everything that trains it."""

    name: str
    model: nn.Module
    config: RunConfig
    device: torch.device
    seed: int
    steps: int = 0
    seconds: float = 0.0
    evals: list = field(default_factory=list)        # (step, top-1, [MASK] top-1, seconds so far)
    reached: tuple | None = None                      # (step, seconds) of the first evaluation >= --until

    def __post_init__(self):
        seeds = derive_seeds(self.seed)
        self.optimizer = make_optimizer(self.model.parameters(), self.config.train)
        self.scheduler = NoamScheduler(self.optimizer, self.config.model.d_model, self.config.train.warmup,
                                       self.config.train.noam_factor)
        self.windows = torch.Generator(device=self.device).manual_seed(seeds["batches"])
        self.masks = torch.Generator(device=self.device).manual_seed(seeds["masking"])
        with torch.random.fork_rng(devices=[]):            # this model's own dropout stream
            torch.manual_seed(seeds["dropout"])
            self.dropout_state = torch.random.get_rng_state()
        self.cuda_dropout_state = None

    def train(self, steps: int, train_ids: torch.Tensor, masker) -> None:
        """``steps`` more training steps of ``train_loop``, timed; the loss read at the end, as the
        Trainer's log does."""
        train = self.config.train
        cuda = self.device.type == "cuda"
        with torch.random.fork_rng(devices=[self.device] if cuda else []):
            torch.random.set_rng_state(self.dropout_state)
            if cuda:
                if self.cuda_dropout_state is None:
                    torch.cuda.manual_seed(derive_seeds(self.seed)["dropout"])
                else:
                    torch.cuda.set_rng_state(self.cuda_dropout_state, self.device)
                torch.cuda.synchronize(self.device)
            losses = []
            started = time.perf_counter()
            self.steps = train_loop(self.model, train_ids, masker, self.optimizer, self.scheduler,
                                    steps=self.steps + steps, step=self.steps, batch_size=train.batch_size,
                                    seq_len=train.seq_len, batch_rng=self.windows, mask_rng=self.masks,
                                    clip_norm=train.clip_norm,
                                    on_step=lambda step, result: losses.append(result.loss))
            float(torch.stack(losses).mean())
            self.seconds += time.perf_counter() - started
            self.dropout_state = torch.random.get_rng_state()
            if cuda:
                self.cuda_dropout_state = torch.cuda.get_rng_state(self.device)

    @property
    def tokens_per_second(self) -> float:
        return self.steps * self.config.train.batch_size * self.config.train.seq_len / max(self.seconds, 1e-9)


def make_arms(device: torch.device, seed: int) -> list[Arm]:
    bert_config, seed_config, fast_config = preset("bert"), preset("seed"), preset("fast")
    seeds = derive_seeds(seed)
    ours = build_model(bert_config.model, seeds["init"])
    theirs = TransformersLogits(to_transformers(ours))          # the same initial weights
    return [Arm("scratchmlm BERT", ours.to(device), bert_config, device, seed),
            Arm("transformers BERT", theirs.to(device), bert_config, device, seed),
            Arm("seed", build_model(seed_config.model, seeds["init"]).to(device), seed_config, device, seed),
            Arm("fast", build_model(fast_config.model, seeds["init"]).to(device), fast_config, device, seed)]


def compare(steps: int, eval_every: int, until: float, device_name: str, seed: int, valid_windows: int) -> dict:
    device = resolve_device(device_name)
    data = RunData.prepare(TrainConfig(valid_windows=valid_windows))
    train_ids, masker = data.train_ids.to(device), data.masker.to(device)
    arms = make_arms(device, seed)
    attention = arms[1].model.bert.config._attn_implementation
    print(f"{len(data.valid)} frozen validation windows, fingerprint {data.valid.fingerprint[:12]}; device {device}, "
          f"{torch.get_num_threads()} threads; transformers attention: {attention}", flush=True)
    for arm in arms:
        print(f"  {arm.name:<18} {sum(p.numel() for p in arm.model.parameters()):>9,} parameters", flush=True)
    while any(arm.steps < steps and arm.reached is None for arm in arms):
        for arm in arms:
            if arm.steps >= steps or arm.reached is not None:
                continue
            arm.train(min(eval_every, steps - arm.steps), train_ids, masker)
            scores = evaluate(arm.model, data.valid)
            arm.evals.append((arm.steps, scores.overall.top1, scores.by_kind["mask"].top1, arm.seconds))
            if until and scores.overall.top1 >= until:
                arm.reached = (arm.steps, arm.seconds)
        print(f"step {max(arm.steps for arm in arms)}: " + "; ".join(
            f"{arm.name} {arm.evals[-1][1]:.3f}/{arm.evals[-1][2]:.3f}" for arm in arms), flush=True)
    report(arms, until)
    return {"fingerprint": data.valid.fingerprint, "device": str(device), "threads": torch.get_num_threads(),
            "seed": seed, "until": until, "transformers_attention": attention,
            "arms": [{"name": arm.name, "steps": arm.steps, "seconds": arm.seconds,
                      "tokens_per_second": arm.tokens_per_second, "evals": arm.evals, "reached": arm.reached}
                     for arm in arms]}


def report(arms: list[Arm], until: float) -> None:
    reference = arms[1].tokens_per_second
    print(f"\n{'model':<18} {'tokens/s':>9} {'vs transformers':>15} {'steps':>6} {'top-1':>6} {'[MASK] top-1':>12}"
          + (f" {'time to ' + format(until, '.3f'):>15}" if until else ""))
    for arm in arms:
        step, top1, mask_top1, _ = arm.evals[-1]
        line = (f"{arm.name:<18} {arm.tokens_per_second:>9,.0f} {arm.tokens_per_second / reference:>14.2f}x "
                f"{step:>6} {top1:>6.3f} {mask_top1:>12.3f}")
        if until:
            line += f" {arm.reached[1]:>9.0f} s ({arm.reached[0]} steps)" if arm.reached else f" {'not reached':>15}"
        print(line)
    common = sorted(set.intersection(*({e[0] for e in arm.evals} for arm in arms)))
    print(f"\nvalidation top-1 / [MASK] top-1 at equal steps:\n{'step':>6} " + " ".join(f"{a.name:>18}" for a in arms))
    for step in common:
        cells = [next(f"{e[1]:.3f} / {e[2]:.3f}" for e in arm.evals if e[0] == step) for arm in arms]
        print(f"{step:>6} " + " ".join(f"{cell:>18}" for cell in cells))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=6000, help="training steps per model at most (default 6000)")
    parser.add_argument("--eval-every", type=int, default=500, help="evaluate every N steps (default 500)")
    parser.add_argument("--until", type=float, default=0.0,
                        help="stop each model at the first evaluation with this validation top-1 (0: off)")
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda or auto")
    parser.add_argument("--seed", type=int, default=0, help="one seed for every model (default 0)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--valid-windows", type=int, default=1024,
                        help="frozen validation windows (default 1024, the seed configuration's)")
    parser.add_argument("--out", type=Path, default=None, help="also write the results here as JSON")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    results = compare(args.steps, args.eval_every, args.until, args.device, args.seed, args.valid_windows)
    if args.out:
        args.out.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
