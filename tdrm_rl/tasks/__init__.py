"""Tasks: problem generators with verifiable answers."""

from __future__ import annotations

from ..config import DataConfig
from .arith import ArithTask, Problem, verify

__all__ = ["ArithTask", "Problem", "get_task", "verify"]


def get_task(cfg: DataConfig) -> ArithTask:
    """The task named by `cfg.task`, built from the data config."""
    if cfg.task == "arith":
        if cfg.step_delimiter != "\n\n":
            # The arith solutions (and the char tokenizer's single delimiter token) use "\n\n".
            raise ValueError(f"data.step_delimiter = {cfg.step_delimiter!r}; the arith task uses '\\n\\n'")
        return ArithTask(num_ops=cfg.num_ops, operand_max=cfg.operand_max, operators=cfg.operators,
                         seed=cfg.seed, value_max=cfg.value_max)
    if cfg.task == "jsonl":
        from .jsonl import JsonlTask

        return JsonlTask(cfg.path, cfg.eval_path, cfg.prompt_key, cfg.answer_key, cfg.on_bad_row, cfg.eval_size)
    raise ValueError(f"unknown data.task {cfg.task!r}; available: ['arith', 'jsonl']")
