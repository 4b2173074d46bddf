"""Metrics out: jsonl + TensorBoard every step, a PNG of the curves and a summary table at the end."""

from __future__ import annotations

import json
import math
import os
from typing import Any


class MetricsLogger:
    def __init__(self, output_dir: str, tensorboard: bool = True) -> None:
        os.makedirs(output_dir, exist_ok=True)
        self.path = os.path.join(output_dir, "metrics.jsonl")
        self.file = open(self.path, "a")
        self.writer = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(os.path.join(output_dir, "tensorboard"))

    def log(self, step: int, metrics: dict[str, Any]) -> None:
        row = {"step": step, **{k: _plain(v) for k, v in metrics.items()}}
        self.file.write(json.dumps(row) + "\n")
        self.file.flush()
        if self.writer is not None:
            for k, v in row.items():
                if k != "step" and isinstance(v, (int, float)) and math.isfinite(v):
                    self.writer.add_scalar(k, v, step)
            self.writer.flush()

    def truncate(self, last_step: int) -> list[dict[str, Any]]:
        """Drop rows logged after `last_step` (a resumed run redoes them); returns the rows kept."""
        self.file.close()
        rows = []
        with open(self.path) as f:
            for line in f:
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:  # a line cut short by a crash
                    continue
                if row["step"] <= last_step:
                    rows.append(row)
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)
        os.replace(tmp, self.path)
        self.file = open(self.path, "a")
        return rows

    def close(self) -> None:
        self.file.close()
        if self.writer is not None:
            self.writer.close()


def _plain(v: Any) -> Any:
    if hasattr(v, "item"):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def read_metrics(path: str) -> list[dict[str, Any]]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def plot_curves(rows: list[dict[str, Any]], png_path: str) -> str:
    """Reward and accuracy curves: training reward/accuracy per step, held-out accuracy per evaluation."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_train, ax_eval) = plt.subplots(1, 2, figsize=(11, 4))
    for key, label in (("reward/blended_mean", "blended reward"), ("reward/rule_mean", "train accuracy (sampled)"),
                       ("prm/td_loss", "PRM TD loss")):
        pts = [(r["step"], r[key]) for r in rows if r.get(key) is not None]
        if pts:
            ax_train.plot(*zip(*pts), label=label)
    ax_train.set_xlabel("RL step")
    ax_train.set_title("Training")
    ax_train.legend()
    for key, label in (("eval/greedy_accuracy", "held-out greedy"), ("eval/sampled_accuracy", "held-out sampled T=1")):
        pts = [(r["step"], r[key]) for r in rows if r.get(key) is not None]
        if pts:
            ax_eval.plot(*zip(*pts), marker="o", label=label)
    ax_eval.set_xlabel("RL step")
    ax_eval.set_ylabel("accuracy")
    ax_eval.set_title("Held-out evaluation")
    ax_eval.legend()
    fig.tight_layout()
    fig.savefig(png_path, dpi=110)
    plt.close(fig)
    return png_path


def format_table(rows: list[tuple[str, str]], title: str) -> str:
    width = max(len(k) for k, _ in rows)
    lines = [title, "-" * (width + 14)]
    lines += [f"{k:<{width}}  {v:>10}" for k, v in rows]
    return "\n".join(lines)


def summarize_run(evals: list[dict[str, float]], ckpt: str | None, seconds: float, eval_problems: int,
                  metrics_path: str, output_dir: str) -> dict[str, Any]:
    """The run's summary: warm-start vs final held-out accuracy (mean of the last two evaluations), written to
    summary.json, with the curves as a PNG and a table on stdout."""
    last = evals[-2:] if len(evals) > 2 else evals[-1:]
    summary = {
        "warm_start_greedy_accuracy": evals[0]["eval/greedy_accuracy"],
        "final_greedy_accuracy": sum(e["eval/greedy_accuracy"] for e in last) / len(last),
        "warm_start_sampled_accuracy": evals[0].get("eval/sampled_accuracy"),
        "final_sampled_accuracy": (sum(e["eval/sampled_accuracy"] for e in last) / len(last)
                                   if "eval/sampled_accuracy" in evals[0] else None),
        "eval_problems": eval_problems,
        "rl_seconds": seconds,
        "checkpoint": ckpt,
    }
    summary["plot"] = plot_curves(read_metrics(metrics_path), os.path.join(output_dir, "curves.png"))
    with open(os.path.join(output_dir, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    fmt = lambda v: "n/a" if v is None else f"{100 * v:.1f}%"  # noqa: E731
    table = format_table([
        ("held-out problems", str(eval_problems)),
        ("greedy accuracy, warm start", fmt(summary["warm_start_greedy_accuracy"])),
        ("greedy accuracy, after RL (mean of last 2 evals)", fmt(summary["final_greedy_accuracy"])),
        ("sampled accuracy T=1, warm start", fmt(summary["warm_start_sampled_accuracy"])),
        ("sampled accuracy T=1, after RL (mean of last 2 evals)", fmt(summary["final_sampled_accuracy"])),
        ("RL wall time (s)", f"{seconds:.0f}"),
    ], title="tdrm-rl summary")
    saved = ckpt or "none (trainer.save_every=-1)"
    print("\n" + table + f"\n\nmetrics: {metrics_path}\nplot:    {summary['plot']}\ncheckpoint: {saved}\n")
    return summary
