"""trainer.loggers: every logger gets each step's metrics and the resolved config, read back from the files the
tools themselves write (TensorBoard events, the wandb offline run's transaction log, the console)."""

from __future__ import annotations

import glob
import json
import os
import struct

import pytest
import yaml

from tdrm_rl.config import ConfigError, load_config
from tdrm_rl.rl.tracking import MetricsLogger, console_line

ROWS = [{"reward/blended_mean": 0.25, "reward/rule_mean": 0.5, "prm/td_loss": 0.125, "timing_s/step": 2.0},
        {"reward/blended_mean": 0.75, "reward/rule_mean": 1.0, "prm/td_loss": 0.0625, "timing_s/step": 3.0,
         "eval/greedy_accuracy": 0.375}]


def run_config(tmp_path, *loggers: str):
    return load_config(None, [f"trainer.loggers=[{','.join(loggers)}]", f"trainer.output_dir={tmp_path}/myrun",
                              "trainer.total_steps=2", "trainer.project_name=tdrm-test", "rollout.group_size=6"])


def log_rows(cfg) -> str:
    out = cfg.trainer.output_dir
    logger = MetricsLogger(out, cfg.trainer.loggers, cfg)
    for step, row in enumerate(ROWS, start=1):
        logger.log(step, row)
    logger.close()
    return out


def wandb_records(run_file: str) -> list:
    """Every record of a wandb run file: a LevelDB-style log (7-byte ':W&B' header, 32 KiB blocks, each chunk
    behind crc32 u32, length u16, type u8; types 1 full, 2 first, 3 middle, 4 last) of wandb Record protos."""
    from wandb.proto import wandb_internal_pb2

    data = open(run_file, "rb").read()
    assert data[:4] == b":W&B"
    block, pos, chunks, records = 32768, 7, b"", []
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a header is padding
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if kind == 0:
            break
        chunks += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(chunks)
            records.append(record)
            chunks = b""
    return records


def test_jsonl_and_tensorboard_hold_every_row_and_the_config(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = run_config(tmp_path, "jsonl", "tensorboard")
    out = log_rows(cfg)
    rows = [json.loads(line) for line in open(os.path.join(out, "metrics.jsonl"))]
    assert rows == [{"step": s, **r} for s, r in enumerate(ROWS, start=1)]
    assert yaml.safe_load(open(os.path.join(out, "config.yaml")))["rollout"]["group_size"] == 6
    events = EventAccumulator(os.path.join(out, "tensorboard"), size_guidance={"tensors": 0})
    events.Reload()
    assert [(e.step, e.value) for e in events.Scalars("prm/td_loss")] == [(1, 0.125), (2, 0.0625)]
    assert [(e.step, e.value) for e in events.Scalars("eval/greedy_accuracy")] == [(2, 0.375)]
    config_text = events.Tensors("config/text_summary")[0].tensor_proto.string_val[0].decode()
    assert "group_size: 6" in config_text


def test_wandb_logs_offline_into_the_run_folder_with_project_name_config_and_steps(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    cfg = run_config(tmp_path, "jsonl", "wandb")
    out = log_rows(cfg)
    run_files = glob.glob(os.path.join(out, "wandb", "offline-run-*", "run-*.wandb"))
    assert len(run_files) == 1, "no offline run: wandb did not default to offline mode"
    records = wandb_records(run_files[0])
    run = next(r.run for r in records if r.WhichOneof("record_type") == "run")
    assert (run.project, run.display_name) == ("tdrm-test", "myrun")  # run name: the output folder's name
    config = {item.key: json.loads(item.value_json) for item in run.config.update}
    assert config["rollout"]["group_size"] == 6 and config["trainer"]["loggers"] == ["jsonl", "wandb"]
    history = [{item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in r.history.item}
               for r in records if r.WhichOneof("record_type") == "history"]
    assert [(h["step"], h["prm/td_loss"], h["reward/rule_mean"]) for h in history] == [(1, 0.125, 0.5),
                                                                                      (2, 0.0625, 1.0)]
    assert "eval/greedy_accuracy" not in history[0] and history[1]["eval/greedy_accuracy"] == 0.375


def test_wandb_respects_wandb_mode(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    out = log_rows(run_config(tmp_path, "jsonl", "wandb"))
    assert not glob.glob(os.path.join(out, "wandb", "*run-*"))  # disabled: wandb writes no run at all
    assert len(open(os.path.join(out, "metrics.jsonl")).readlines()) == 2


def test_console_prints_the_changed_config_then_one_line_per_step(tmp_path, capsys):
    out = log_rows(run_config(tmp_path, "jsonl", "console"))
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3
    assert lines[0].startswith(f"config: {out}/config.yaml") and "rollout.group_size=6" in lines[0]
    assert "trainer.total_steps=2" in lines[0] and "prm.lr" not in lines[0]  # only what differs from defaults
    assert lines[1] == "step 1/2 | reward 0.250 | acc 0.500 | prm_loss 0.1250 | step_s 2.0"
    assert lines[2] == "step 2/2 | reward 0.750 | acc 1.000 | prm_loss 0.0625 | eval_greedy 0.375 | step_s 3.0"


def test_console_line_shows_only_the_fields_a_row_has():
    assert console_line(4, {"reward/rule_mean": 0.5, "other": 1.0}) == "step 4 | acc 0.500"


def test_logger_choices_are_checked_and_jsonl_is_required():
    with pytest.raises(ConfigError, match=r"key 'trainer.loggers' = \['jsonl', 'mlflow'\]; each entry must be one "
                                          r"of \['jsonl', 'tensorboard', 'wandb', 'console'\], once; 'mlflow' is not"):
        load_config(None, ["trainer.loggers=[jsonl,mlflow]"])
    with pytest.raises(ConfigError, match=r"must include 'jsonl'"):
        load_config(None, ["trainer.loggers=[console,wandb]"])


def test_the_old_tensorboard_key_still_switches_tensorboard(caplog):
    assert load_config(None, ["trainer.tensorboard=false"]).trainer.loggers == ["jsonl"]
    assert "trainer.tensorboard is deprecated" in caplog.text
    on = load_config(None, ["trainer.loggers=[jsonl,console]", "trainer.tensorboard=true"]).trainer
    assert on.loggers == ["jsonl", "console", "tensorboard"] and on.tensorboard is None
