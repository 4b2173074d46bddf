"""Metrics out: every step to the loggers `trainer.loggers` names, and at the end a PNG of the curves and a
summary table.

    jsonl        metrics.jsonl (one row per step) and config.yaml beside it; always on: resume, summary.json,
                 curves.png and `tdrm-rl export` read it
    tensorboard  output_dir/tensorboard/: every finite scalar, the config as text
    wandb        a Weights & Biases run in output_dir/wandb/, offline unless WANDB_MODE says otherwise (then
                 `wandb sync output_dir/wandb/offline-run-*`); project and run name from the recipe, the config
                 as the run config, x-axis the RL step
    console      one line per step: step, reward, train accuracy, PRM loss, step time (and eval accuracy)
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from typing import Any

LOGGERS = ("jsonl", "tensorboard", "wandb", "console")
COMMAND_FILE = "command.json"  # how `tdrm-rl train` started the run (write_run_command)
# wandb.init waits this long for its service process before failing (wandb's own default is 90 s).
WANDB_INIT_TIMEOUT_S = 90.0


class MetricsLogger:
    """metrics.jsonl, plus the other loggers `loggers` names; `config` (the resolved RunConfig) goes to each."""

    def __init__(self, output_dir: str, loggers: tuple[str, ...] | list[str] = ("jsonl",),
                 config: Any | None = None) -> None:
        os.makedirs(output_dir, exist_ok=True)
        if config is not None:
            from tdrm_rl.config import to_yaml

            with open(os.path.join(output_dir, "config.yaml"), "w") as f:
                f.write(to_yaml(config))
        self.path = os.path.join(output_dir, "metrics.jsonl")
        self.file = open(self.path, "a")
        self.sinks: list[Any] = []
        try:
            for name in loggers:
                if name != "jsonl":
                    self.sinks.append(_SINKS[name](output_dir, config))
        except BaseException:
            self.close()
            raise

    def log(self, step: int, metrics: dict[str, Any]) -> None:
        row = {"step": step, **{k: _plain(v) for k, v in metrics.items()}}
        self.file.write(json.dumps(row) + "\n")
        self.file.flush()
        for sink in self.sinks:
            sink.log(step, row)

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
        for sink in self.sinks:
            sink.close()
        self.sinks = []


def _numbers(row: dict[str, Any]) -> dict[str, float]:
    return {k: v for k, v in row.items() if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool)
            and math.isfinite(v)}


class TensorBoardSink:
    def __init__(self, output_dir: str, config: Any | None) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(os.path.join(output_dir, "tensorboard"))
        if config is not None:
            from tdrm_rl.config import to_yaml

            # TensorBoard renders text as markdown: indented lines keep the YAML verbatim.
            self.writer.add_text("config", "".join(f"    {line}\n" for line in to_yaml(config).splitlines()), 0)

    def log(self, step: int, row: dict[str, Any]) -> None:
        for k, v in _numbers(row).items():
            self.writer.add_scalar(k, v, step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class WandbSink:
    def __init__(self, output_dir: str, config: Any | None) -> None:
        from tdrm_rl.config import ConfigError

        try:
            import wandb
        except ImportError:
            raise ConfigError("trainer.loggers includes 'wandb', which is not installed: "
                              "pip install 'tdrm-rl[wandb]'") from None
        tc = config.trainer if config is not None else None
        mode = os.environ.get("WANDB_MODE") or "offline"  # offline unless the user asked for more
        try:
            self.run = wandb.init(
                project=tc.project_name if tc else "tdrm-rl",
                name=(tc.run_name if tc and tc.run_name else os.path.basename(os.path.abspath(output_dir))),
                dir=output_dir, mode=mode, reinit="create_new",
                config=dataclasses.asdict(config) if config is not None else None,
                # console="off": the terminal already has the run's output, and wrapping stdout fights tqdm.
                settings=wandb.Settings(console="off", init_timeout=WANDB_INIT_TIMEOUT_S))
        except Exception as e:
            raise ConfigError(f"trainer.loggers includes 'wandb' (WANDB_MODE={mode}), and wandb.init failed: "
                              f"{str(e).splitlines()[0] if str(e) else type(e).__name__}; unset WANDB_MODE to log "
                              "offline, or run `wandb login`") from None
        # The RL step is the x-axis (a metric, not wandb's own step, so a rewind to a checkpoint logs again).
        self.run.define_metric("step")
        self.run.define_metric("*", step_metric="step")

    def log(self, step: int, row: dict[str, Any]) -> None:
        self.run.log({"step": step, **_numbers(row)})

    def close(self) -> None:
        import wandb

        self.run.finish()
        # finish() returns before wandb's service process has written the run file; teardown waits for it, so the
        # run folder is complete when the logger closes (the next wandb.init starts a new service).
        wandb.teardown()


# What the console line shows, in order: (metric key, label, format).
CONSOLE_FIELDS = (("reward/blended_mean", "reward", ".3f"), ("reward/rule_mean", "acc", ".3f"),
                  ("prm/td_loss", "prm_loss", ".4f"), ("eval/greedy_accuracy", "eval_greedy", ".3f"),
                  ("eval/sampled_accuracy", "eval_sampled", ".3f"), ("timing_s/step", "step_s", ".1f"))


def console_line(step: int, row: dict[str, Any], total_steps: int | None = None) -> str:
    """`step 3/10 | reward 0.512 | acc 0.438 | prm_loss 0.2310 | step_s 4.2`: the fields the row has."""
    parts = [f"step {step}" + (f"/{total_steps}" if total_steps else "")]
    parts += [f"{label} {row[key]:{fmt}}" for key, label, fmt in CONSOLE_FIELDS
              if isinstance(row.get(key), (int, float))]
    return " | ".join(parts)


def changed_fields(config: Any) -> list[str]:
    """`section.key=value` for every field of `config` that differs from its default."""
    from tdrm_rl.config import field_bounds

    defaults = {key: value for key, value, _ in field_bounds()}
    return [f"{key}={value}" for key, value, _ in field_bounds(config) if defaults[key] != value]


class ConsoleSink:
    def __init__(self, output_dir: str, config: Any | None) -> None:
        self.total = config.trainer.total_steps if config is not None else None
        if config is not None:
            changed = " ".join(changed_fields(config)) or "none"
            self.write(f"config: {os.path.join(output_dir, 'config.yaml')} (changed from the defaults: {changed})")

    @staticmethod
    def write(line: str) -> None:
        from tqdm import tqdm

        tqdm.write(line)  # above a progress bar, if one is running

    def log(self, step: int, row: dict[str, Any]) -> None:
        self.write(console_line(step, row, self.total))

    def close(self) -> None:
        pass


_SINKS = {"tensorboard": TensorBoardSink, "wandb": WandbSink, "console": ConsoleSink}


def _plain(v: Any) -> Any:
    if hasattr(v, "item"):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def write_run_command(output_dir: str, command: str, recipe: str | None, overrides: list[str]) -> None:
    """Record how a run was started (command.json: the recipe and overrides): `tdrm-rl export` names them."""
    os.makedirs(output_dir, exist_ok=True)
    with open(os.path.join(output_dir, COMMAND_FILE), "w") as f:
        json.dump({"command": command, "recipe": recipe, "overrides": list(overrides)}, f, indent=2)


def read_run_command(run_dir: str) -> dict[str, Any] | None:
    path = os.path.join(run_dir, COMMAND_FILE)
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        return json.load(f)


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
