"""The jsonl task: rows, bad rows (error naming the line, or counted skips), held-out split, safe verifier."""

import json

import pytest

from tdrm_rl.config import ConfigError, DataConfig, load_config
from tdrm_rl.tasks import get_task
from tdrm_rl.tasks.jsonl import DataError, verify


def write_rows(tmp_path, lines, name="data.jsonl"):
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def good(i):
    return json.dumps({"prompt": f"What is {i}+1?\n", "answer": str(i + 1)})


def test_rows_split_into_train_and_held_out(tmp_path):
    path = write_rows(tmp_path, [good(i) for i in range(10)] + [""])
    task = get_task(DataConfig(task="jsonl", path=path, eval_size=3))
    assert [p.answer for p in task.train_set(0)] == [str(i + 1) for i in range(7)]
    assert [p.answer for p in task.eval_problems(3)] == ["8", "9", "10"]
    assert [p.answer for p in task.train_set(2)] == ["1", "2"]
    assert task.skipped_rows == 0


@pytest.mark.parametrize("bad, reason", [
    ("{not json", "not valid JSON"),
    ("[1, 2]", "expected a JSON object, got list"),
    (json.dumps({"prompt": "x"}), "field 'answer' is missing"),
    (json.dumps({"question": "x", "answer": "1"}), "field 'prompt' is missing"),
    (json.dumps({"prompt": {"nested": 1}, "answer": "1"}), "field 'prompt' is missing or not text"),
    ("[" * 100_000, "not valid JSON"),
])
def test_a_bad_row_is_an_error_naming_file_and_line(tmp_path, bad, reason):
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


def test_configurable_fields_and_no_usable_rows(tmp_path):
    path = write_rows(tmp_path, [json.dumps({"q": "1+1?", "a": 2}), json.dumps({"q": "2+2?", "a": 4})])
    task = get_task(DataConfig(task="jsonl", path=path, eval_size=1, prompt_key="q", answer_key="a"))
    assert task.train_set(0)[0].answer == "2"
    with pytest.raises(DataError, match="no usable rows"):
        get_task(DataConfig(task="jsonl", path=path, eval_size=1, on_bad_row="skip"))
    with pytest.raises(DataError, match="cannot be split"):
        get_task(DataConfig(task="jsonl", path=write_rows(tmp_path, [good(0)], "one.jsonl")))


def test_missing_data_path_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="key 'data.path' names a missing path"):
        load_config(None, ["data.task=jsonl", f"data.path={tmp_path}/nope.jsonl"])
    with pytest.raises(ConfigError, match="data.path"):
        load_config(None, ["data.task=jsonl"])
    with pytest.raises(ConfigError, match="data.on_bad_row"):
        load_config(None, ["data.on_bad_row=ignore"])


@pytest.mark.parametrize("response, answer, expected", [
    ("a\n\nb\n\n\\boxed{5}", "5", 1.0),
    ("\\boxed{ 005 }", "5", 1.0),
    ("\\boxed{x^2 + 1}", "x^2+1", 1.0),
    ("\\boxed{6}", "5", 0.0),
    ("no answer", "5", 0.0),
    ("", "5", 0.0),
    ("\\boxed{9**9**9}", "9**9**9".replace("*", "^"), 0.0),
    ("\\boxed{__import__('os').system('false')}", "0", 0.0),
    ("\\boxed{" + "{" * 50_000 + "1" + "}" * 50_000 + "}", "1", 0.0),  # nesting beyond the answer cap
    ("\\boxed{" + "9" * 1_000_000 + "}", "9" * 1_000_000, 0.0),
    (None, "5", 0.0),
])
def test_verify_compares_text_never_evaluates(response, answer, expected):
    assert verify(response, answer) == expected
