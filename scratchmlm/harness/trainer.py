"""The Trainer: the core's training loop (``scratchmlm/loop.py``) with a run directory around it.

``Trainer.train`` calls ``train_loop`` as it is and adds what a run needs in its two callbacks:

    train_loop(model, train_ids, masker, optimizer, scheduler, ..., valid, eval_every,
               on_step  = every log_every steps: one metrics.jsonl record (a non-finite loss
                          stops training); Ctrl-C / SIGTERM; samples every sample_every steps
               on_eval  = the evaluation's record; best.pt and last.pt; early stopping)

Everything a run writes goes through its ``RunDirectory`` (``run_dir.py``); Ctrl-C and SIGTERM
are handled by ``StopRequests`` (``interrupt.py``), so neither the loop nor its callbacks carry
the plumbing of either.

Several processes (``torchrun``, see ``distributed.py``) run this same loop, each on its own
batches; ``self.world`` says which one this is. ``train_step`` calls the model wrapped in
``DistributedDataParallel`` (``step_model``), which averages the gradients inside ``backward``.
Every rank evaluates the same weights; rank 0 alone writes the run directory. The ranks meet only
where they must agree (the gradients; the logged averages; the stop decision; the random-number
states a checkpoint holds).
"""

from __future__ import annotations

import copy
import math
import sys
import time
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from ..corpus import TINY_SHAKESPEARE, load_text
from ..errors import ScratchMLMError
from ..evaluate import EvalResult, evaluate, pseudo_perplexity
from ..files import resolved
from ..loop import train_loop
from ..model import BertMLM, TransformerMLM
from ..noam import NoamScheduler
from ..sample import Samples, fill_prompts, validation_prompts
from ..step import StepResult
from .build import (RunData, build_model, check_memory, derive_seeds, load_tokenizer, lr_scale, make_optimizer,
                    resolve_device)
from .checkpoint import load_checkpoint, load_model_state, save_checkpoint
from .config import RunConfig, check_resumed_config
from .distributed import World
from .environment import progress_bar_disabled
from .interrupt import SIGNAL_NAMES, StopRequests
from .precision import prepare_for_training
from .run_dir import CHECKPOINT_KEYS, MetricsLog, RunDirectory, check_resume_state, load_run, read_metrics


class Trainer:
    """Trains a ``TransformerMLM`` (or a ``BertMLM``) as ``config`` describes, writing the run into ``run_dir``.

    ``config`` is copied, never changed: the Trainer's own copy (``trainer.config``) takes the
    vocabulary size from the data and widens ``max_len`` to ``seq_len`` if needed. ``text``
    replaces the corpus file (for tests and notebooks); ``resume=True`` continues the run in
    ``run_dir`` exactly where its ``last.pt`` left off. ``world`` places this process among several
    (``distributed.start_world``); by default it is the only one. ``plots=False`` skips drawing
    ``plots/*.png`` at the end (``scratchmlm plot RUN`` draws them later).
    """

    def __init__(self, config: RunConfig, run_dir: str | Path, resume: bool = False,
                 text: str | None = None, progress: bool = True, world: World | None = None, plots: bool = True):
        self.config = config = copy.deepcopy(config)
        train = config.train.validate()
        if train.data != TINY_SHAKESPEARE and text is None:   # the run must find its data from anywhere
            train.data = str(resolved(train.data, "data file"))
        if train.init_from:
            train.init_from = str(resolved(train.init_from, "--init-from run"))
        self.run = RunDirectory(run_dir)
        self.world = world = world or World()
        self.progress = progress and world.is_main
        self.plots = plots                  # draw plots/*.png when training ends (scratchmlm plot can, later)
        self.device = resolve_device(train.device, world.local_rank if world.distributed else None)
        self.step = 0
        self.best_loss = math.inf
        self.evals_without_improvement = 0
        self.last_eval_step: int | None = None
        self.last_saved_step: int | None = None
        self.stopped_by: int | None = None     # the signal that stopped the last train(), if any
        self.unknown_characters: dict[str, int] = {}   # --init-from: characters the vocabulary lacks
        self.restarted = False     # run_dir held a run stopped before its first checkpoint, started afresh
        self.metrics = MetricsLog(self.run.metrics)
        # A run stopped before its first checkpoint has nothing to resume: it starts afresh, in place.
        self.restarted = resume and self.run.stopped_before_first_checkpoint()
        if self.restarted:
            resume = False
        if resume:
            if not self.run.checkpoint("last").is_file():
                raise ScratchMLMError(f"Cannot resume: {self.run.path} has no checkpoints/last.pt.")
            if world.is_main:
                self.run.lock()
            try:
                self._build(text, tokenizer=load_tokenizer(self.run.tokenizer))
                state = load_checkpoint(self.run.checkpoint("last"), required=CHECKPOINT_KEYS)
                check_resume_state(state, self.run.checkpoint("last"))
                self._restore(state)
                if train.steps <= self.step:
                    raise ScratchMLMError(f"The run is already at step {self.step}; resume with --steps "
                                          f"larger than {self.step} to train further.")
                if world.is_main:
                    self.metrics.truncate_after(self.step)
            except BaseException:
                if world.is_main:
                    self.run.unlock()
                raise
        else:
            if world.is_main:
                self.run.check_new()
            self._build(text)
            if world.is_main:
                self._create_run()
            world.barrier()        # the other ranks wait until rank 0 has written the run directory
            if self.config.train.init_from:
                self._evaluate_and_checkpoint()     # the starting point, scored on the new text
            else:
                self.save("last")  # step 0: a run that stops before its first evaluation can be resumed

    def _build(self, text: str | None, tokenizer=None) -> None:
        """Data, model, optimizer, schedule and random generators, as the configuration says.

        ``tokenizer``: a resumed run's own. With ``init_from``, a new run takes the model, the
        vocabulary and the starting weights of the run (or export) it continues; a resumed one
        reads nothing from there (its config.json, tokenizer.json and last.pt hold it all)."""
        config, train = self.config, self.config.train
        text = load_text(train.data) if text is None else text
        if self.world.is_main and self.run.checkpoint("last").is_file():    # resuming: the same text
            self.run.check_data(text)
        self.text = text
        initial_weights = None
        if train.init_from and tokenizer is None:   # a new run; a resumed one has all it needs in last.pt
            initial_weights, tokenizer = self._take_from(train.init_from, text)
        self.data = RunData.prepare(train, text, tokenizer=tokenizer)
        config.model.vocab_size = self.data.tokenizer.vocab_size
        config.model.max_len = max(config.model.max_len, train.seq_len)
        check_memory(config.model, train)
        seeds = derive_seeds(train.seed, self.world.rank)
        self.model: TransformerMLM | BertMLM = build_model(config.model, seeds["init"])
        if initial_weights is not None:
            load_model_state(self.model, initial_weights, Path(train.init_from))
        self.model.to(self.device)
        self.model.set_fused_attention(train.fused_attention)
        # The module train_step calls: the model itself, or the model wrapped -- gradients averaged
        # across processes, bf16 autocast, torch.compile -- with the same parameters.
        shared = self.model
        if self.world.distributed:
            shared = DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        self.step_model = prepare_for_training(shared, self.device, train.precision, train.compile)
        self.optimizer = make_optimizer(self.model.parameters(), train)
        self.scheduler = NoamScheduler(self.optimizer, config.model.d_model, train.warmup,
                                       train.noam_factor * lr_scale(train, self.world.world_size))
        self.train_ids = self.data.train_ids.to(self.device)
        self.valid = self.data.valid.to(self.device)
        self.masker = self.data.masker.to(self.device)
        self.batch_rng = torch.Generator(device=self.device).manual_seed(seeds["batches"])
        self.mask_rng = torch.Generator(device=self.device).manual_seed(seeds["masking"])
        torch.manual_seed(seeds["dropout"])   # dropout draws from the global generator

    def _take_from(self, source: str, text: str) -> tuple[dict, object]:
        """Domain adaptation: the best weights and the tokenizer of the run ``source``, whose model
        settings this run adopts. Characters of ``text`` the vocabulary lacks become ``[UNK]``;
        ``self.unknown_characters`` counts them."""
        model, tokenizer, source_config, _ = load_run(source, "best", "cpu")   # a run or an export
        train = self.config.train
        if train.seq_len > source_config.model.max_len:
            raise ScratchMLMError(f"--seq-len {train.seq_len} is longer than the {source_config.model.max_len} "
                                  f"tokens the model of {source} reads; use --seq-len {source_config.model.max_len} "
                                  f"or less.")
        self.config.model = copy.deepcopy(source_config.model)
        train.tokenizer, train.vocab_size = source_config.train.tokenizer, source_config.train.vocab_size
        self.unknown_characters = {char: text.count(char) for char in tokenizer.unknown_characters(text)}
        return model.state_dict(), tokenizer

    def _create_run(self) -> None:
        """Write a new run directory; if that fails half-way, remove it again (it was empty)."""
        baselines = self.data.baselines()
        self.restarted = self.run.create() or self.restarted
        try:
            self.config.save(self.run.config)
            self.run.write_provenance(self.config.train.data, self.text)
            self.data.tokenizer.save(self.run.tokenizer)
            for baseline in baselines:
                self.metrics.append({"type": "baseline", "name": baseline.name.split()[0], "step": 0,
                                     **baseline.to_dict()})
            if self.config.train.init_from:
                self.metrics.append({"type": "init", "step": 0, "from": self.config.train.init_from,
                                     "unknown_characters": self.unknown_characters})
        except BaseException:
            for path in sorted(self.run.path.rglob("*"), reverse=True):
                path.rmdir() if path.is_dir() else path.unlink()
            self.run.unlock()
            raise

    # -- the loop --------------------------------------------------------------------------------
    def train(self) -> dict:
        """Train to ``config.train.steps``; returns the last evaluation as a dict ({} if none).

        The loop is the core's ``train_loop`` (``scratchmlm/loop.py``), called as it is; what a run
        adds goes into its two callbacks:

            after every step        the progress bar; every log_every steps, and before an evaluation,
                                    one metrics.jsonl record (a non-finite loss stops training) and
                                    the processes' agreement on Ctrl-C / SIGTERM; samples
            after every evaluation  the record, best.pt and last.pt; early stopping; samples

        Ctrl-C or SIGTERM finishes the current step (and its evaluation, if one is due), saves
        ``last.pt`` and returns, with the signal in ``self.stopped_by``. A non-finite loss stops
        training with a ``ScratchMLMError`` naming the step; the last good checkpoint is kept.
        """
        cfg, world = self.config.train, self.world
        if world.is_main:
            self.run.lock()
        self.stopped_by = None
        log, last_eval, stop_signal = IntervalLog(cfg.log_every, world), {}, 0
        bar = tqdm(total=cfg.steps, initial=self.step, desc="training", unit="step", dynamic_ncols=True,
                   disable=not self.progress or progress_bar_disabled())
        hook_done = time.perf_counter()      # when the last callback returned: the next step starts

        def due(step: int, every: int) -> bool:
            return step % every == 0 or step == cfg.steps

        def after_step(step: int, result: StepResult) -> bool:
            nonlocal stop_signal, hook_done
            self.step = step
            log.add(step, result, cfg.batch_size * cfg.seq_len, started=hook_done)
            bar.update(1)
            log_due = due(step, cfg.log_every) or due(step, cfg.eval_every)
            if log_due:                                # never checkpoint unchecked steps
                self._write_log_record(log, bar)
            if log_due or not world.distributed:
                # several processes stop together, at a log step, if any of them was asked to
                stop_signal = world.max_int(stop.requested or 0, self.device)
            if world.is_main and due(step, cfg.sample_every) and not due(step, cfg.eval_every):
                self._write_samples()
            hook_done = time.perf_counter()
            return bool(stop_signal)

        def after_eval(step: int, scores: EvalResult) -> bool:
            nonlocal last_eval, hook_done
            last_eval = self._checkpoint_evaluation(scores, seconds=time.perf_counter() - hook_done)
            reason = self._stop_reason(last_eval) if world.is_main else None
            stopping = bool(world.max_int(int(reason is not None), self.device))
            if world.is_main and stopping:
                bar.write(f"stopping at step {step}: {reason}", file=sys.stderr)
            elif world.is_main and due(step, cfg.sample_every):
                self._write_samples()
            hook_done = time.perf_counter()
            return stopping

        try:
            with StopRequests() as stop:
                train_loop(self.model, self.train_ids, self.masker, self.optimizer, self.scheduler,
                           steps=cfg.steps, batch_size=cfg.batch_size, seq_len=cfg.seq_len,
                           batch_rng=self.batch_rng, mask_rng=self.mask_rng, clip_norm=cfg.clip_norm,
                           valid=self.valid, eval_every=cfg.eval_every, step=self.step,
                           on_step=after_step, on_eval=after_eval, step_model=self.step_model)
                if stop_signal and self.step < cfg.steps:        # stopped by Ctrl-C / SIGTERM
                    self.stopped_by = stop_signal
                    if world.is_main:
                        bar.write(f"{SIGNAL_NAMES[stop_signal]}: saving checkpoints/last.pt at step "
                                  f"{self.step}", file=sys.stderr)
                if log.pending:                        # a partial interval, after Ctrl-C
                    self._write_log_record(log, bar)
                if self.last_saved_step != self.step:
                    self.save("last")
            if world.is_main and self.plots:
                self.write_plots()
        finally:
            bar.close()
            if world.is_main:
                self.run.unlock()
        return last_eval

    # -- pieces of the loop ------------------------------------------------------------------------
    def _write_log_record(self, log: "IntervalLog", bar) -> None:
        record, bad_step = log.flush()
        if bad_step is not None:
            self._stop_non_finite(f"The training loss or gradient norm became {record['loss']} / "
                                  f"{record['grad_norm']}", bad_step)
        if self.world.is_main:
            self.metrics.append(record)
        bar.set_postfix(loss=f"{record['loss']:.3f}", acc=f"{record['accuracy']:.3f}", lr=f"{record['lr']:.2e}")

    def _stop_non_finite(self, what: str, step: int) -> None:
        """Stop training: the weights can no longer be trusted, so nothing more is saved."""
        raise ScratchMLMError(
            f"{what} at step {step}; training stopped and checkpoints/last.pt (step {self.last_saved_step}) "
            f"is kept. Start a new run with a lower --noam-factor or --clip-norm (a resumed run keeps "
            f"its settings), or check the data.")

    def evaluate(self) -> EvalResult:
        return evaluate(self.model, self.valid)

    def _evaluate_and_checkpoint(self) -> dict:
        """Evaluate now and checkpoint (see ``_checkpoint_evaluation``): the starting point of ``init_from``."""
        started = time.perf_counter()
        result = self.evaluate()
        return self._checkpoint_evaluation(result, seconds=time.perf_counter() - started)

    def _checkpoint_evaluation(self, result: EvalResult, seconds: float) -> dict:
        """Record the evaluation ``result`` (on rank 0), keep ``best.pt`` if the validation loss
        improved, save ``last.pt``. Every rank scores the same weights, so every rank stops alike on
        a non-finite loss."""
        record = {}
        self.last_eval_step = self.step
        if not math.isfinite(result.overall.loss):
            self._stop_non_finite(f"The validation loss became {result.overall.loss}", self.step)
        if self.world.is_main:
            record = {"type": "eval", "step": self.step, "time": time.time(), "seconds": seconds, **result.to_dict()}
            if self.config.train.init_from:     # domain adaptation also tracks the pseudo-perplexity
                record["pseudo_perplexity"] = self.pseudo_perplexity()
            self.metrics.append(record)
            if result.overall.loss < self.best_loss:
                self.best_loss = result.overall.loss
                self.evals_without_improvement = 0
                self.save("best")
            else:
                self.evals_without_improvement += 1
        self.save("last")
        return record

    def pseudo_perplexity(self, length: int = 1000) -> float:
        """Pseudo-perplexity of the first ``length`` tokens of the validation text (each masked in
        turn, inside a window of ``seq_len``)."""
        ids = self.data.tokenizer.encode(self.data.valid_text, parse_special=False)[:length]
        return pseudo_perplexity(self.model, ids, self.data.tokenizer.mask_id, self.config.train.seq_len)

    def _stop_reason(self, last_eval: dict) -> str | None:
        """Why to stop after this evaluation (``None``: go on): patience run out, or a target reached."""
        cfg = self.config.train
        if cfg.early_stopping_patience > 0 and self.evals_without_improvement >= cfg.early_stopping_patience:
            return f"no better validation loss in {cfg.early_stopping_patience} evaluations (early stopping)"
        if cfg.stop_at_top1 > 0 and last_eval["top1"] >= cfg.stop_at_top1:
            return f"validation top-1 {last_eval['top1']:.3f} reached --stop-at-top1 {cfg.stop_at_top1}"
        return None

    def samples(self, count: int = 6) -> Samples:
        """Validation lines masked and filled; which lines and masks depends only on seed and step."""
        rng = torch.Generator().manual_seed(self.config.train.seed * 1_000_003 + self.step)
        prompts = validation_prompts(self.data.valid_text, count, self.config.train.seq_len, rng)
        return fill_prompts(self.model, self.data.tokenizer, prompts, self.data.masker, rng, strict=False)

    def _write_samples(self) -> None:
        samples = self.samples()
        self.run.samples.mkdir(exist_ok=True)
        (self.run.samples / f"step_{self.step:06d}.txt").write_text(samples.to_plain() + "\n")
        (self.run.samples / f"step_{self.step:06d}.html").write_text(samples._repr_html_())

    def write_plots(self) -> None:
        """``plots/curves.png`` (once there is a training record) and ``plots/noam.png``."""
        from .plots import plot_noam, plot_training_curves   # matplotlib: ~30 MB, loaded only to draw

        cfg = self.config.train
        records = read_metrics(self.run.metrics)
        if any(r["type"] == "train" for r in records):
            plot_training_curves(records, self.run.plots / "curves.png", config=self.config)
        plot_noam(self.config.model.d_model, cfg.warmup, self.scheduler.factor, max(cfg.steps, 2 * cfg.warmup),
                  self.run.plots / "noam.png")

    # -- checkpoints -------------------------------------------------------------------------------
    def save(self, name: str) -> Path | None:
        """Write ``checkpoints/<name>.pt``; returns its path (``None`` on ranks other than 0).

        ``best.pt`` holds the weights alone (what ``load_run`` and ``evaluate`` read); ``last.pt``
        holds everything needed to continue bit for bit: optimizer, schedule and every rank's
        random-number states. Saving ``last`` is collective: every rank must call it.
        """
        weights = {
            "step": self.step,
            "device_type": self.device.type,
            "config": self.config.to_dict(),
            "vocab": self.data.tokenizer.vocab,
            "valid_fingerprint": self.valid.fingerprint,
            "model": self.model.state_dict(),
        }
        if name == "best":
            return save_checkpoint(weights, self.run.checkpoint(name)) if self.world.is_main else None
        rng_by_rank = self.world.gather_to_main(self._rng_state())
        self.last_saved_step = self.step
        if not self.world.is_main:
            return None
        state = {
            **weights,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "best_loss": self.best_loss,
            "evals_without_improvement": self.evals_without_improvement,
            "last_eval_step": self.last_eval_step,
            "world_size": self.world.world_size,
            "rng": rng_by_rank[0],
            "rng_by_rank": rng_by_rank,
        }
        return save_checkpoint(state, self.run.checkpoint(name))

    def _rng_state(self) -> dict:
        """This process's random-number generators: batches, masking, and dropout's global ones."""
        cuda = self.device.type == "cuda"
        return {
            "batches": self.batch_rng.get_state(),
            "masking": self.mask_rng.get_state(),
            "cpu": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state(self.device) if cuda else torch.empty(0, dtype=torch.uint8),
        }

    def _restore(self, state: dict) -> None:
        """Continue from a ``last.pt``, after checking it belongs to this data and this machine."""
        if state["vocab"] != self.data.tokenizer.vocab:      # resume reads the run's own tokenizer.json
            raise ScratchMLMError(f"{self.run.tokenizer} does not match checkpoints/last.pt (a different "
                                  f"vocabulary); restore the run's own tokenizer.json.")
        check_resumed_config(dict(state["config"]), self.config.to_dict(), "checkpoints/last.pt was trained with")
        if state["device_type"] != self.device.type:
            raise ScratchMLMError(
                f"This run was trained on {state['device_type']} and cannot be resumed exactly on "
                f"{self.device.type} (the random-number states differ); resume it on a machine with "
                f"{state['device_type']}.")
        saved_world = state.get("world_size", 1)
        if saved_world != self.world.world_size:
            raise ScratchMLMError(
                f"This run was trained by {saved_world} process(es) and cannot be resumed exactly by "
                f"{self.world.world_size}: each process has its own random stream of batches and masks. "
                + ("Resume it as it was started: torchrun --nproc_per_node="
                   f"{saved_world} -m scratchmlm train --resume ..." if saved_world > 1 else
                   "Resume it with a single process: scratchmlm train --resume ..."))
        if state["valid_fingerprint"] != self.valid.fingerprint:
            raise ScratchMLMError(f"The validation set differs from the one this run was scored on (the text "
                                  f"{self.config.train.data} changed); restore the original text file.")
        load_model_state(self.model, state["model"], self.run.checkpoint("last"))
        try:
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            rng = state.get("rng_by_rank", [state["rng"]])[self.world.rank]
            self.batch_rng.set_state(rng["batches"])
            self.mask_rng.set_state(rng["masking"])
            torch.set_rng_state(rng["cpu"])
            if self.device.type == "cuda" and rng["cuda"].numel():
                torch.cuda.set_rng_state(rng["cuda"], self.device)
        except (KeyError, TypeError, ValueError, RuntimeError) as error:
            raise ScratchMLMError(f"{self.run.checkpoint('last')} has a damaged optimizer, scheduler or "
                                  f"random-number state ({type(error).__name__}); it cannot be resumed.") from None
        self.step = state["step"]
        self.best_loss = state["best_loss"]
        self.evals_without_improvement = state["evals_without_improvement"]
        self.last_eval_step = state.get("last_eval_step")
        self.last_saved_step = self.step


class IntervalLog:
    """The steps since the last metrics record; reading their tensors is the one device sync.

    The interval's time runs from the start of its first step to the moment its results are read
    (on a GPU the steps are queued, so only then are they done); the evaluations, samples and
    checkpoints between intervals are not part of it. With several processes, the record
    averages the losses of all ranks and counts the tokens of all ranks.
    """

    def __init__(self, log_every: int, world: World | None = None):
        self.log_every = log_every
        self.world = world or World()
        self.pending: list[tuple[int, StepResult]] = []
        self.started: float | None = None
        self.tokens = 0

    def add(self, step: int, result: StepResult, tokens: int, started: float) -> None:
        """Step ``step`` began at ``time.perf_counter()`` = ``started`` and trained on ``tokens``."""
        if not self.pending:
            self.started = started
        self.pending.append((step, result))
        self.tokens += tokens

    def flush(self) -> tuple[dict, int | None]:
        """One ``train`` record averaging the pending steps, and the first step whose loss or
        gradient norm was not finite (``None`` if all were). ``partial`` marks an interval
        shorter than ``log_every`` (cut by an evaluation, the end, or Ctrl-C)."""
        results = [r for _, r in self.pending]
        losses = self.world.sum(torch.stack([r.loss.float() for r in results])) / self.world.world_size
        grad_norms = torch.stack([r.grad_norm.float() for r in results])   # the same on every rank
        counts = self.world.sum(torch.stack([torch.stack([r.num_scored, r.num_correct]) for r in results]))
        losses, grad_norms, counts = losses.cpu(), grad_norms.cpu(), counts.cpu()   # waits for the device
        seconds = time.perf_counter() - self.started
        finite = torch.isfinite(losses) & torch.isfinite(grad_norms)   # an inf gradient makes NaN weights
        bad = None if bool(finite.all()) else int((~finite).nonzero()[0])
        scored, correct = (int(total) for total in counts.sum(dim=0))
        record = {
            "type": "train", "step": self.pending[-1][0], "time": time.time(),
            "loss": float(losses.mean()) if bad is None else float(losses[bad]),
            "accuracy": correct / max(scored, 1),
            "lr": self.pending[-1][1].lr,
            "grad_norm": float(grad_norms.mean()) if bad is None else float(grad_norms[bad]),
            "tokens_per_second": self.tokens * self.world.world_size / max(seconds, 1e-9),
            "steps": len(self.pending),
            "partial": len(self.pending) < self.log_every,
        }
        bad_step = None if bad is None else self.pending[bad][0]
        self.pending, self.started, self.tokens = [], None, 0
        return record, bad_step

