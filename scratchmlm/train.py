"""Training: the hand-written step, and the Trainer loop around it.

``train_step`` is one optimisation step, top to bottom:

    1. mask the batch (no gradient)        inputs, labels = masker(ids)
    2. forward                             logits = model(inputs)            [batch, seq, vocab]
    3. loss on the selected positions      L = sum_selected -log p(label) / #selected
    4. backward                            dL/dθ
    5. clip the global gradient norm       g <- g * min(1, clip / ||g||)
    6. optimizer step                      θ <- Adam(θ, g, lr)
    7. scheduler step                      lr <- Noam(step + 1)
    8. zero the gradients

It returns tensors (loss, gradient norm, counts), not Python numbers, so that on a GPU nothing
waits for the device; the Trainer reads them every ``log_every`` steps.
"""

from __future__ import annotations

import json
import math
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .batches import FrozenValidationSet, random_windows
from .checkpoint import load_checkpoint, save_checkpoint
from .config import ModelConfig, RunConfig, TrainConfig
from .corpus import load_text, split_text
from .errors import ScratchMLMError
from .evaluate import EvalResult, bigram_infill_baseline, evaluate, unigram_baseline
from .masking import IGNORE_INDEX, BertMasker
from .model import TransformerMLM
from .noam import NoamScheduler
from .plots import plot_noam, plot_training_curves
from .sample import fill_prompts, validation_prompts
from .tokenizer import CharTokenizer


@dataclass
class StepResult:
    """What one step reports; tensors stay on the training device until someone reads them."""

    loss: torch.Tensor          # mean cross-entropy over the selected positions
    grad_norm: torch.Tensor     # global gradient norm before clipping
    lr: float                   # the learning rate this step used
    num_scored: torch.Tensor    # number of selected positions
    num_correct: torch.Tensor   # selected positions whose top-1 prediction was right


def masked_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean cross-entropy over positions whose label is not ``-100``, and their count.

    ``logits`` ``[batch, seq, vocab]``, ``labels`` ``[batch, seq]``. Dividing the sum by
    ``max(count, 1)`` keeps an all-unselected batch at loss 0 instead of NaN.
    """
    total = F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten(),
                            ignore_index=IGNORE_INDEX, reduction="sum")
    count = (labels != IGNORE_INDEX).sum()
    return total / count.clamp(min=1), count


def train_step(model: torch.nn.Module, ids: torch.Tensor, masker: BertMasker,
               mask_generator: torch.Generator, optimizer: torch.optim.Optimizer,
               scheduler: NoamScheduler, clip_norm: float) -> StepResult:
    """One hand-written training step on a batch of token ids ``[batch, seq]``."""
    # 1. mask: choose the positions to predict and corrupt the input there
    with torch.no_grad():
        masked = masker(ids, mask_generator)
    # 2. forward
    logits = model(masked.inputs)                                      # [batch, seq, vocab]
    # 3. the loss sees only the selected positions
    loss, num_scored = masked_cross_entropy(logits, masked.labels)
    # 4. backward
    loss.backward()
    # 5. clip: rescale all gradients together so their global L2 norm is at most clip_norm
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), clip_norm)
    # 6. optimizer step, with the learning rate the scheduler set for this step
    lr = optimizer.param_groups[0]["lr"]
    optimizer.step()
    # 7. advance the schedule to the next step's learning rate
    scheduler.step()
    # 8. clear the gradients for the next step
    optimizer.zero_grad(set_to_none=True)
    with torch.no_grad():
        num_correct = ((logits.argmax(-1) == masked.labels) & (masked.labels != IGNORE_INDEX)).sum()
    return StepResult(loss.detach(), grad_norm.detach(), lr, num_scored, num_correct)


# -- the run ------------------------------------------------------------------------------------

def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ScratchMLMError(f"Unknown device {name!r}: use auto, cpu, cuda or cuda:N.") from None
    if device.type not in ("cpu", "cuda"):
        raise ScratchMLMError(f"Unsupported device {name!r}: use auto, cpu, cuda or cuda:N.")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ScratchMLMError("--device cuda was asked for, but PyTorch sees no CUDA GPU here; "
                              "use --device cpu (or auto).")
    return device


def derive_seeds(seed: int) -> dict[str, int]:
    """Independent seeds for initialisation, batches, masking and dropout, from one ``seed``."""
    init, batches, masking, dropout = np.random.SeedSequence(seed).generate_state(4, dtype=np.uint64)
    return {"init": int(init >> np.uint64(1)), "batches": int(batches >> np.uint64(1)),
            "masking": int(masking >> np.uint64(1)), "dropout": int(dropout >> np.uint64(1))}


def build_model(model_config: ModelConfig, seed: int) -> TransformerMLM:
    """A freshly initialised model; the global RNG is untouched (initialisation uses a fork)."""
    model_config.validate()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return TransformerMLM(**vars(model_config))


class MetricsLog:
    """``metrics.jsonl``: one JSON object per line, appended and flushed as it happens."""

    def __init__(self, path: Path):
        self.path = path

    def append(self, record: dict) -> None:
        with open(self.path, "a") as handle:
            handle.write(json.dumps(record) + "\n")
            handle.flush()
            os.fsync(handle.fileno())

    def truncate_after(self, step: int) -> None:
        """Drop records of steps after ``step`` (a resumed run writes them again), atomically."""
        kept = [r for r in read_metrics(self.path) if r.get("step", 0) <= step]
        temporary = self.path.with_suffix(".tmp")
        with open(temporary, "w") as handle:
            handle.write("".join(json.dumps(r) + "\n" for r in kept))
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, self.path)


def read_metrics(path: str | Path) -> list[dict]:
    path = Path(path)
    if not path.is_file():
        raise ScratchMLMError(f"{path} does not exist: is this a scratchmlm run directory?")
    records = []
    lines = path.read_text().splitlines()
    for number, line in enumerate(lines, 1):
        if line.strip():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                if number == len(lines):   # a record cut short by a hard kill: it never completed
                    break
                raise ScratchMLMError(f"{path} line {number} is not valid JSON.") from None
    return records


@dataclass
class RunData:
    """Everything a run derives from its text: tokenizer, token streams, masker, validation set."""

    tokenizer: CharTokenizer
    train_ids: torch.Tensor
    valid_text: str
    masker: BertMasker
    valid: FrozenValidationSet

    @classmethod
    def prepare(cls, train_config: TrainConfig, text: str | None = None,
                tokenizer: CharTokenizer | None = None) -> "RunData":
        text = load_text(train_config.data) if text is None else text
        split = split_text(text, min_length=train_config.seq_len)
        tokenizer = tokenizer or CharTokenizer.from_text(text)
        train_ids = tokenizer.encode(split.train, parse_special=False)
        valid_ids = tokenizer.encode(split.valid, parse_special=False)
        masker = BertMasker.from_config(tokenizer, train_config)
        valid = FrozenValidationSet.build(valid_ids, masker, train_config.seq_len, train_config.valid_windows)
        return cls(tokenizer, train_ids, split.valid, masker, valid)


class Trainer:
    """Runs ``train_step`` in a loop, with evaluation, samples, checkpoints and metrics.

    The run directory holds ``config.json``, ``tokenizer.json``, ``metrics.jsonl``,
    ``checkpoints/{last,best}.pt``, ``samples/step_NNNNNN.txt`` and ``plots/``.
    """

    def __init__(self, config: RunConfig, run_dir: str | Path, resume: bool = False,
                 text: str | None = None, progress: bool = True):
        self.config = config
        config.train.validate()
        self.run_dir = Path(run_dir)
        self.progress = progress
        self.device = resolve_device(config.train.device)
        self._check_run_dir(resume)

        train = config.train
        self.data = RunData.prepare(train, text)
        config.model.vocab_size = self.data.tokenizer.vocab_size
        if config.model.max_len < train.seq_len:
            config.model.max_len = train.seq_len
        seeds = derive_seeds(train.seed)
        self.model = build_model(config.model, seeds["init"]).to(self.device)
        self.model.set_fused_attention(train.fused_attention)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=0.0, weight_decay=train.weight_decay,
                                          betas=(train.adam_beta1, train.adam_beta2), eps=train.adam_eps)
        self.scheduler = NoamScheduler(self.optimizer, config.model.d_model, train.warmup, train.noam_factor)
        self.train_ids = self.data.train_ids.to(self.device)
        self.valid = self.data.valid.to(self.device)
        self.batch_generator = torch.Generator(device=self.device).manual_seed(seeds["batches"])
        self.mask_generator = torch.Generator(device=self.device).manual_seed(seeds["masking"])
        torch.manual_seed(seeds["dropout"])   # dropout draws from the global generator
        self.step = 0
        self.best_loss = math.inf
        self.evals_without_improvement = 0
        self.metrics = MetricsLog(self.run_dir / "metrics.jsonl")

        if resume:
            self._restore(load_checkpoint(self.run_dir / "checkpoints" / "last.pt"))
            if train.steps <= self.step:
                raise ScratchMLMError(f"The run is already at step {self.step}; resume with --steps larger "
                                      f"than {self.step} to train further.")
            self.metrics.truncate_after(self.step)
        else:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            config.save(self.run_dir / "config.json")
            self.data.tokenizer.save(self.run_dir / "tokenizer.json")
            self._log_baselines()

    def _check_run_dir(self, resume: bool) -> None:
        if self.run_dir.exists() and not self.run_dir.is_dir():
            raise ScratchMLMError(f"--run-dir {self.run_dir} is a file, not a directory.")
        exists = self.run_dir.exists() and any(self.run_dir.iterdir())
        if resume and not (self.run_dir / "checkpoints" / "last.pt").is_file():
            raise ScratchMLMError(f"Cannot resume: {self.run_dir} has no checkpoints/last.pt.")
        if exists and not resume:
            raise ScratchMLMError(f"Run directory {self.run_dir} already exists. Use --resume to continue "
                                  f"that run, or choose another --run-dir.")

    # -- checkpoint state -------------------------------------------------------------------------
    def state(self) -> dict:
        cuda = self.device.type == "cuda"
        return {
            "step": self.step,
            "device_type": self.device.type,
            "config": self.config.to_dict(),
            "vocab": self.data.tokenizer.vocab,
            "valid_fingerprint": self.valid.fingerprint,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "best_loss": self.best_loss,
            "evals_without_improvement": self.evals_without_improvement,
            "rng": {
                "batches": self.batch_generator.get_state(),
                "masking": self.mask_generator.get_state(),
                "cpu": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state(self.device) if cuda else torch.empty(0, dtype=torch.uint8),
            },
        }

    def _restore(self, state: dict) -> None:
        if state["vocab"] != self.data.tokenizer.vocab:
            raise ScratchMLMError("The checkpoint was saved with a different vocabulary than this data "
                                  "gives; resume with the same --data as the original run.")
        if state.get("device_type", self.device.type) != self.device.type:
            raise ScratchMLMError(
                f"This run was trained on {state['device_type']} and cannot be resumed exactly on "
                f"{self.device.type} (the random-number states differ); resume it on {state['device_type']}.")
        if state["valid_fingerprint"] != self.valid.fingerprint:
            raise ScratchMLMError("The validation set differs from the one this run was scored on "
                                  "(the data or masking settings changed); resume with the original ones.")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.step = state["step"]
        self.best_loss = state["best_loss"]
        self.evals_without_improvement = state["evals_without_improvement"]
        rng = state["rng"]
        self.batch_generator.set_state(rng["batches"])
        self.mask_generator.set_state(rng["masking"])
        torch.set_rng_state(rng["cpu"])
        if self.device.type == "cuda" and rng["cuda"].numel():
            torch.cuda.set_rng_state(rng["cuda"], self.device)

    def save(self, name: str) -> Path:
        return save_checkpoint(self.state(), self.run_dir / "checkpoints" / f"{name}.pt")

    # -- pieces of the loop -------------------------------------------------------------------------
    def _log_baselines(self) -> None:
        vocab = self.data.tokenizer.vocab_size
        for result in (unigram_baseline(self.data.train_ids, self.data.valid, vocab),
                       bigram_infill_baseline(self.data.train_ids, self.data.valid, vocab,
                                              self.data.tokenizer.mask_id)):
            self.metrics.append({"type": "baseline", "name": result.name.split()[0], "step": 0,
                                 **result.to_dict()})

    def evaluate(self) -> EvalResult:
        return evaluate(self.model, self.valid)

    def samples(self, count: int = 6):
        """Validation lines masked and filled; which lines and masks depends only on seed and step."""
        generator = torch.Generator().manual_seed(self.config.train.seed * 1_000_003 + self.step)
        prompts = validation_prompts(self.data.valid_text, count, self.config.train.seq_len, generator)
        return fill_prompts(self.model, self.data.tokenizer, prompts, self.data.masker, generator)

    def _write_samples(self) -> None:
        samples = self.samples()
        directory = self.run_dir / "samples"
        directory.mkdir(exist_ok=True)
        (directory / f"step_{self.step:06d}.txt").write_text(samples.to_plain() + "\n")
        (directory / f"step_{self.step:06d}.html").write_text(samples._repr_html_())

    def write_plots(self) -> None:
        """``plots/curves.png`` (loss, accuracy, learning rate, gradient norm) and ``plots/noam.png``."""
        cfg = self.config.train
        records = read_metrics(self.metrics.path)
        if any(r["type"] == "train" for r in records):
            plot_training_curves(records, self.run_dir / "plots" / "curves.png")
        plot_noam(self.config.model.d_model, cfg.warmup, cfg.noam_factor, max(cfg.steps, 2 * cfg.warmup),
                  self.run_dir / "plots" / "noam.png")

    # -- the loop --------------------------------------------------------------------------------
    def train(self) -> dict:
        """Train to ``config.train.steps``; returns the last evaluation as a dict.

        Ctrl-C finishes the current step, saves ``last.pt`` and returns. A non-finite loss stops
        training with a ``ScratchMLMError`` naming the step; the last good checkpoint is kept.
        """
        cfg = self.config.train
        interrupted = threading.Event()
        bar = tqdm(total=cfg.steps, initial=self.step, desc="training", unit="step", dynamic_ncols=True,
                   **({} if self.progress else {"disable": True}))   # TQDM_DISABLE=1 also silences it
        previous_handler = None
        if threading.current_thread() is threading.main_thread():
            def on_interrupt(*_):
                if interrupted.is_set():      # a second Ctrl-C: stop at once
                    raise KeyboardInterrupt
                interrupted.set()
                bar.write("interrupted: finishing this step and saving checkpoints/last.pt "
                          "(Ctrl-C again to quit at once)", file=sys.stderr)
            previous_handler = signal.signal(signal.SIGINT, on_interrupt)
            previous_term_handler = signal.signal(signal.SIGTERM, on_interrupt)
        pending: list[tuple[int, StepResult]] = []
        last_eval: dict = {}
        train_seconds, tokens_since = 0.0, 0
        try:
            self.model.train()
            while self.step < cfg.steps and not interrupted.is_set():
                step_started = time.perf_counter()
                ids = random_windows(self.train_ids, cfg.batch_size, cfg.seq_len, self.batch_generator)
                result = train_step(self.model, ids, self.data.masker, self.mask_generator,
                                    self.optimizer, self.scheduler, cfg.clip_norm)
                train_seconds += time.perf_counter() - step_started
                self.step += 1
                pending.append((self.step, result))
                tokens_since += ids.numel()
                bar.update(1)
                at_end = self.step == cfg.steps
                eval_due = self.step % cfg.eval_every == 0 or at_end
                if self.step % cfg.log_every == 0 or eval_due:   # never checkpoint unchecked steps
                    record = self._flush(pending, tokens_since / max(train_seconds, 1e-9))
                    pending, train_seconds, tokens_since = [], 0.0, 0
                    bar.set_postfix(loss=f"{record['loss']:.3f}", acc=f"{record['accuracy']:.3f}",
                                    lr=f"{record['lr']:.2e}")
                if eval_due:
                    last_eval = self._evaluate_and_checkpoint()
                    if self._should_stop_early():
                        bar.write(f"early stopping at step {self.step}: no validation improvement in "
                                  f"{cfg.early_stopping_patience} evaluations", file=sys.stderr)
                        break
                if self.step % cfg.sample_every == 0 or at_end:
                    self._write_samples()
            if pending:
                self._flush(pending, tokens_since / max(train_seconds, 1e-9))
            if interrupted.is_set() or (last_eval and last_eval.get("step") != self.step):
                self.save("last")
            self.write_plots()
        finally:
            bar.close()
            if previous_handler is not None:
                signal.signal(signal.SIGINT, previous_handler)
                signal.signal(signal.SIGTERM, previous_term_handler)
        return last_eval

    def _flush(self, pending: list[tuple[int, StepResult]], tokens_per_second: float) -> dict:
        """Read the pending steps' tensors (one device sync), stop on a non-finite loss, log."""
        losses = torch.stack([r.loss for _, r in pending]).cpu()
        grad_norms = torch.stack([r.grad_norm for _, r in pending]).float().cpu()
        finite = torch.isfinite(losses) & torch.isfinite(grad_norms)   # an inf gradient makes NaN weights
        if not bool(finite.all()):
            first = int((~finite).nonzero()[0])
            self._stop_non_finite(f"The training loss or gradient norm became {losses[first].item()} / "
                                  f"{grad_norms[first].item()}", pending[first][0])
        scored = sum(int(r.num_scored) for _, r in pending)
        record = {
            "type": "train", "step": self.step, "time": time.time(),
            "loss": float(losses.mean()),
            "accuracy": sum(int(r.num_correct) for _, r in pending) / max(scored, 1),
            "lr": pending[-1][1].lr,
            "grad_norm": float(grad_norms.mean()),
            "tokens_per_second": tokens_per_second,
        }
        self.metrics.append(record)
        return record

    def _stop_non_finite(self, what: str, step: int) -> None:
        """Stop training: the weights can no longer be trusted, so nothing more is saved."""
        kept = self.run_dir / "checkpoints" / "last.pt"
        where = (f"the last good checkpoint {kept} (step {load_checkpoint(kept)['step']}) is kept"
                 if kept.exists() else "no checkpoint had been written yet")
        raise ScratchMLMError(f"{what} at step {step}; training stopped and {where}. "
                              f"Lower --noam-factor or --clip-norm, or check the data.")

    def _evaluate_and_checkpoint(self) -> dict:
        result = self.evaluate()
        if not math.isfinite(result.overall.loss):
            self._stop_non_finite(f"The validation loss became {result.overall.loss}", self.step)
        record = {"type": "eval", "step": self.step, "time": time.time(), **result.to_dict()}
        self.metrics.append(record)
        if result.overall.loss < self.best_loss:
            self.best_loss = result.overall.loss
            self.evals_without_improvement = 0
            self.save("best")
        else:
            self.evals_without_improvement += 1
        self.save("last")
        return record

    def _should_stop_early(self) -> bool:
        patience = self.config.train.early_stopping_patience
        return patience > 0 and self.evals_without_improvement >= patience


def load_run(run_dir: str | Path, checkpoint: str = "best", device: str = "cpu"):
    """A trained model and its tokenizer from a run directory: ``(model, tokenizer, config, state)``."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.json").is_file():
        raise ScratchMLMError(f"{run_dir} is not a scratchmlm run directory (no config.json).")
    config = RunConfig.load(run_dir / "config.json")
    try:
        tokenizer = CharTokenizer.load(run_dir / "tokenizer.json")
    except (OSError, ValueError) as error:
        if isinstance(error, ScratchMLMError):
            raise
        raise ScratchMLMError(f"{run_dir}/tokenizer.json is missing or unreadable ({type(error).__name__}); "
                              f"the run directory is incomplete.") from None
    path = run_dir / "checkpoints" / f"{checkpoint}.pt"
    state = load_checkpoint(path)
    if state.get("vocab") != tokenizer.vocab:
        raise ScratchMLMError(f"{path} was saved with a different vocabulary than {run_dir}/tokenizer.json.")
    model = build_model(config.model, 0)
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as error:
        raise ScratchMLMError(f"{path} does not fit the model in config.json: "
                              f"{str(error).splitlines()[0]}") from None
    model.set_fused_attention(config.train.fused_attention)
    return model.to(resolve_device(device)).eval(), tokenizer, config, state
