"""File tasks as the sampler and the bad-input matrix see them: train pool, held-out split, bad rows."""

import json

import pytest

from tdrm_rl.config import ConfigError, DataConfig, load_config
from tdrm_rl.tasks import get_task
from tdrm_rl.tasks.base import DataError


def write_rows(tmp_path, lines, name="data.jsonl"):
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def good(i):
    return json.dumps({"prompt": f"What is {i}+1?", "answer": str(i + 1)})


def test_rows_split_into_train_pool_and_held_out(tmp_path):
    path = write_rows(tmp_path, [good(i) for i in range(10)] + [""])
    task = get_task(DataConfig(task="jsonl", path=path, eval_size=3))
    assert [p.answer for p in task.train_set(0)] == [str(i + 1) for i in range(7)]
    assert [p.answer for p in task.eval_problems(3)] == ["8", "9", "10"]
    assert [p.answer for p in task.train_set(2)] == ["1", "2"]
    assert task.skipped_rows == 0


@pytest.mark.parametrize("bad, reason", [
    ("{not json", "not valid JSON"),
    ("[1, 2]", "expected an object with fields, got list"),
    (json.dumps({"prompt": "x"}), "answer field 'answer' is missing"),
    (json.dumps({"text": "x", "answer": "1"}), "no question field"),
    (json.dumps({"prompt": {"nested": 1}, "answer": "1"}), "question field 'prompt' is not text"),
    ("[" * 100_000, "not valid JSON"),
])
def test_a_bad_row_is_one_line_naming_file_and_line(tmp_path, bad, reason):
    path = write_rows(tmp_path, [good(0), good(1), bad, good(2)])
    with pytest.raises(DataError) as err:
        get_task(DataConfig(task="jsonl", path=path, eval_size=1))
    message = str(err.value)
    assert f"{path} line 3: {reason}" in message and "data.on_bad_row=skip" in message
    assert "\n" not in message


def test_bad_rows_are_skipped_and_counted(tmp_path):
    path = write_rows(tmp_path, [good(0), "{oops", good(1), "42", good(2)])
    task = get_task(DataConfig(task="jsonl", path=path, eval_size=1, on_bad_row="skip"))
    assert task.skipped_rows == 2
    assert len(task.train_set(0)) == 2 and len(task.eval_problems(1)) == 1


def test_no_usable_rows_and_too_few_rows(tmp_path):
    path = write_rows(tmp_path, ["{oops", "7"])
    with pytest.raises(DataError, match="no usable rows"):
        get_task(DataConfig(task="jsonl", path=path, eval_size=1, on_bad_row="skip"))
    with pytest.raises(DataError, match="leave none for training"):
        get_task(DataConfig(task="jsonl", path=write_rows(tmp_path, [good(0)], "one.jsonl"), eval_size=1))


def test_missing_data_path_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="key 'data.path' names a missing"):
        load_config(None, ["data.task=jsonl", f"data.path={tmp_path}/nope.jsonl", "model.policy_path=Qwen/Qwen2.5-0.5B"])
    with pytest.raises(ConfigError, match="data.path"):
        load_config(None, ["data.task=jsonl", "model.policy_path=Qwen/Qwen2.5-0.5B"])
    with pytest.raises(ConfigError, match="data.on_bad_row"):
        load_config(None, ["data.on_bad_row=ignore"])
