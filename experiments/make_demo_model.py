"""Make the demo model that ships in ``scratchmlm/demo`` (the tutorials' trained model).

    python experiments/make_demo_model.py                  # trains (about 4 min on 2 quiet CPU cores), then packs
    python experiments/make_demo_model.py --from-run DIR   # packs a run already trained with TRAIN_COMMAND

The run is the seed model (d_model 128, 6 layers, 8 heads, d_ff 256, 32-character windows) trained
with the command below. Packing keeps what a reader of the model needs and nothing else:

    config.json      the run's configuration (data: "tinyshakespeare", not this machine's path)
    tokenizer.json   the Hugging Face tokenizer file
    metrics.jsonl    every training, evaluation and baseline record of the run
    run.json         provenance: the corpus sha256 and the versions that trained it
    checkpoints/best.pt  the weights at the lowest validation loss: step, vocabulary and model only
                     (3.3 MB; the full resume state with Adam's moments would be 9.7 MB)

``tests/test_demo_model.py`` checks that it loads and scores, on the frozen validation set, what
its metrics say.
"""

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from scratchmlm.harness.checkpoint import load_checkpoint, save_checkpoint
from scratchmlm.harness.config import RunConfig
from scratchmlm.classroom.notebook import DEMO_RUN
from scratchmlm.harness.run_dir import CHECKPOINT_KEYS, read_metrics

TRAIN_COMMAND = ["scratchmlm", "train", "--steps", "2500", "--warmup", "500", "--color", "never"]


def pack(run: Path, out: Path) -> None:
    state = load_checkpoint(run / "checkpoints" / "best.pt", required=CHECKPOINT_KEYS)
    config = RunConfig.load(run / "config.json")
    config.train.data = "tinyshakespeare"
    (out / "checkpoints").mkdir(parents=True, exist_ok=True)
    config.save(out / "config.json")
    for name in ("tokenizer.json", "metrics.jsonl", "run.json"):
        shutil.copyfile(run / name, out / name)
    weights = {"step": state["step"], "vocab": state["vocab"], "model": state["model"],
               "config": config.to_dict(), "valid_fingerprint": state["valid_fingerprint"]}
    save_checkpoint(weights, out / "checkpoints" / "best.pt")
    best = min((r for r in read_metrics(out / "metrics.jsonl") if r["type"] == "eval"), key=lambda r: r["loss"])
    print(f"packed step {state['step']} into {out}: validation top-1 {best['top1']:.3f}, "
          f"[MASK] top-1 {best['by_kind']['mask']['top1']:.3f}, CE {best['loss']:.3f}")
    print(json.dumps({"train_command": " ".join(TRAIN_COMMAND)}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--from-run", type=Path, help="a run directory trained with TRAIN_COMMAND")
    parser.add_argument("--out", type=Path, default=DEMO_RUN, help="where to write (default: scratchmlm/demo)")
    args = parser.parse_args()
    run = args.from_run
    if run is None:
        run = Path(tempfile.mkdtemp()) / "demo"
        subprocess.run([sys.executable, "-m"] + TRAIN_COMMAND + ["--run-dir", str(run)], check=True)
    pack(run, args.out)


if __name__ == "__main__":
    sys.exit(main())
