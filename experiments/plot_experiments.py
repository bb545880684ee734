"""Draw the validation curves of every experiment in ``experiments/results/*/results.json`` into
one figure, ``experiments/results/experiments.png``: top-1 on each run's own frozen validation
set against the step, one panel per experiment, one colour per variant, one line per seed.

    python experiments/plot_experiments.py
"""

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

RESULTS = Path(__file__).parent / "results"
EXPERIMENTS = ["masking_rate", "mask_token_mix", "masking_scheme", "norm_position", "positional_encoding",
               "curriculum", "early_stopping"]


def main() -> None:
    figure, axes = plt.subplots(2, 4, figsize=(18, 8), constrained_layout=True)
    for ax, name in zip(axes.flat, EXPERIMENTS):
        record = json.loads((RESULTS / name / "results.json").read_text())
        labels = [variant["label"] for variant in record["variants"]]
        for run in record["runs"]:
            steps, top1 = zip(*[(point[0], point[1]) for point in run["curve"]])
            colour = f"C{labels.index(run['variant'])}"
            ax.plot(steps, top1, color=colour, alpha=0.8, label=run["variant"] if run["seed"] == record["seeds"][0] else None)
        ax.set_title(f"{name.replace('_', ' ')} (seeds {record['seeds']})")
        ax.set_xlabel("step")
        ax.set_ylabel("validation top-1 (own frozen set)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    axes.flat[-1].axis("off")
    figure.savefig(RESULTS / "experiments.png", dpi=80)
    print(RESULTS / "experiments.png")


if __name__ == "__main__":
    main()
