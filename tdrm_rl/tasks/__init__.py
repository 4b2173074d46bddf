"""Tasks: problem generators with verifiable answers.

    arith                  the embedded multi-step arithmetic task (tiny model, no download)
    reasoning_gym:<name>   any reasoning-gym dataset, its own scorer (tasks/rgym.py)
    champ                  the CHAMP competition problems, math-verify (tasks/champ.py)
    jsonl / parquet        a GSM8K / MATH-format file at data.path, math-verify (tasks/math_files.py)

Every task has the interface of `base.Task`. The real-problem tasks import their packages lazily.
"""

from __future__ import annotations

from tdrm_rl.config import DataConfig
from .arith import ArithTask, verify
from .base import DataError, Problem, Task

__all__ = ["ArithTask", "DataError", "Problem", "Task", "get_task", "verify"]


def get_task(cfg: DataConfig) -> Task:
    """The task named by `cfg.task`, built from the data config."""
    family, _, name = cfg.task.partition(":")
    extraction = cfg.answer_extraction
    if family == "arith":
        if cfg.step_delimiter != "\n\n":
            # The arith solutions (and the char tokenizer's single delimiter token) use "\n\n".
            raise ValueError(f"data.step_delimiter = {cfg.step_delimiter!r}; the arith task uses '\\n\\n'")
        return ArithTask(num_ops=cfg.num_ops, operand_max=cfg.operand_max, operators=cfg.operators,
                         seed=cfg.seed, value_max=cfg.value_max, answer_extraction=extraction)
    if family == "reasoning_gym":
        from .rgym import ReasoningGymTask

        return ReasoningGymTask(name, seed=cfg.seed, eval_size=cfg.eval_size, options=dict(cfg.task_options),
                                verify_timeout_s=cfg.verify_timeout_s, answer_extraction=extraction)
    if family == "champ":
        from .champ import ChampTask

        return ChampTask(delimiter=cfg.step_delimiter, verify_timeout_s=cfg.verify_timeout_s,
                         answer_extraction=extraction)
    if family in ("jsonl", "parquet"):
        from .math_files import FileTask

        if not cfg.path:
            raise DataError(f"data.task={family} needs data.path (a .{family} file)")
        return FileTask(family, cfg.path, eval_path=cfg.eval_path, fmt=cfg.format, prompt_key=cfg.prompt_key,
                        answer_key=cfg.answer_key, on_bad_row=cfg.on_bad_row, eval_size=cfg.eval_size,
                        delimiter=cfg.step_delimiter, verify_timeout_s=cfg.verify_timeout_s,
                        answer_extraction=extraction)
    raise ValueError(f"unknown data.task {cfg.task!r}; available: arith, reasoning_gym:<name>, champ, jsonl, parquet")
