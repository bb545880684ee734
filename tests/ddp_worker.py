"""Run by tests/test_distributed.py under ``torchrun --nproc_per_node=2``: one step's gradients.

Every rank masks its own batch and runs forward and backward through the Trainer's DDP-wrapped
model. Rank 0 gathers every rank's gradients and batch and prints one JSON line saying

- whether the gradients are bitwise identical on all ranks (DDP averaged them during backward);
- how far they are from the mean of the per-rank gradients, recomputed here in one process with
  a plain (unwrapped) model from the same initial weights;
- whether the ranks drew different windows and masks;

then all ranks train a few steps and rank 0 reports whether the weights are still identical.
Usage: ``torchrun --nproc_per_node=2 tests/ddp_worker.py RUN_DIR``.
"""

import copy
import json
import sys

import torch

from scratchmlm.batches import random_windows
from scratchmlm.harness.config import ModelConfig, RunConfig, TrainConfig
from scratchmlm.harness.distributed import start_world, stop_world
from scratchmlm.step import masked_cross_entropy
from scratchmlm.harness.trainer import Trainer


def main(run_dir: str) -> None:
    world = start_world("cpu")
    # dropout off, so that the gradients can be recomputed exactly in one process
    config = RunConfig(ModelConfig(d_model=32, num_heads=4, num_layers=2, d_ff=64, max_len=16, dropout=0.0),
                       TrainConfig(device="cpu", steps=6, batch_size=8, seq_len=16, warmup=4,
                                   log_every=3, eval_every=6, sample_every=6, valid_windows=32))
    trainer = Trainer(config, run_dir, world=world, progress=False)
    initial = copy.deepcopy(trainer.model)

    ids = random_windows(trainer.train_ids, 8, 16, trainer.batch_rng)
    masked = trainer.masker(ids, trainer.mask_rng)
    loss, _ = masked_cross_entropy(trainer.step_model(masked.inputs), masked.labels)
    loss.backward()
    mine = {"grads": [p.grad.clone() for p in trainer.model.parameters()],
            "inputs": masked.inputs, "labels": masked.labels}
    everyone = world.gather_to_main(mine)
    trainer.optimizer.zero_grad(set_to_none=True)

    report = {}
    if world.is_main:
        identical = all(torch.equal(g0, g1) for g0, g1 in zip(everyone[0]["grads"], everyone[1]["grads"]))
        expected = [torch.zeros_like(p) for p in initial.parameters()]
        for batch in everyone:                      # the mean of the per-rank gradients, by hand
            initial.zero_grad(set_to_none=True)
            initial.train()
            loss, _ = masked_cross_entropy(initial(batch["inputs"]), batch["labels"])
            loss.backward()
            for total, p in zip(expected, initial.parameters()):
                total += p.grad / len(everyone)
        difference = max(float((g - e).abs().max()) for g, e in zip(everyone[0]["grads"], expected))
        scale = max(float(e.abs().max()) for e in expected)
        report.update(grads_identical=identical, max_abs_difference=difference, grad_scale=scale,
                      different_batches=not torch.equal(everyone[0]["inputs"], everyone[1]["inputs"]))

    trainer.train()
    weights = world.gather_to_main([p.detach().clone() for p in trainer.model.parameters()])
    if world.is_main:
        report["weights_identical_after_training"] = all(
            torch.equal(a, b) for a, b in zip(weights[0], weights[1]))
        report["step"] = trainer.step
        print("REPORT " + json.dumps(report), flush=True)
    world.barrier()          # every rank is done before any tears the process group down
    stop_world(world)


if __name__ == "__main__":
    main(sys.argv[1])
