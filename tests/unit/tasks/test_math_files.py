"""jsonl / parquet problem files in GSM8K, MATH and plain formats: loading, bad rows, split, verify."""

from __future__ import annotations

import json
import random

import pytest

from tdrm_rl.config import DataConfig
from tdrm_rl.tasks import get_task
from tdrm_rl.tasks.base import DataError
from tdrm_rl.tasks.math_files import FileTask, load_problems

GSM8K = [
    {"question": "Natalia sold 48 clips in April and half as many in May. How many in total?",
     "answer": "In May she sold 48/2 = <<48/2=24>>24 clips.\nIn total 48+24 = <<48+24=72>>72 clips.\n#### 72"},
    {"question": "A shirt costs $1,200 after a $300 discount. What was the price?",
     "answer": "1200 + 300 = <<1200+300=1500>>1500\n#### 1,500"},
    {"question": "What is 7 times 6?", "answer": "7*6=<<7*6=42>>42\n#### 42"},
]
MATH = [
    {"problem": "What is $\\frac{1}{2}+\\frac{1}{4}$?", "solution": "We add: $\\frac{2}{4}+\\frac{1}{4}=\\boxed{\\frac{3}{4}}$."},
    {"problem": "Solve $2x=6$.", "solution": "So $x=3$.", "answer": "3"},
]


def write_jsonl(path, rows, raw_lines=()):
    with open(path, "w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
        for line in raw_lines:
            f.write(line + "\n")
    return str(path)


def write_parquet(path, rows):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(rows), str(path))
    return str(path)


def test_gsm8k_jsonl_answers_steps_and_verify(tmp_path):
    path = write_jsonl(tmp_path / "gsm8k.jsonl", GSM8K)
    problems, skipped = load_problems(path, "jsonl")
    assert skipped == 0
    assert [p.answer for p in problems] == ["72", "1500", "42"]
    assert problems[0].prompt == GSM8K[0]["question"]
    # calculator annotations gone, one step per line, the answer boxed last
    assert problems[0].solution == "In May she sold 48/2 = 24 clips.\n\nIn total 48+24 = 72 clips.\n\n\\boxed{72}"
    task = FileTask("jsonl", path, eval_size=1)
    assert task.verify("so \\boxed{72}", "72") == 1.0
    assert task.verify("so \\boxed{73}", "72") == 0.0
    assert task.verify("so \\boxed{1500.0}", "1500") == 1.0


def test_math_format_answer_from_boxed_solution_or_answer_field(tmp_path):
    path = write_jsonl(tmp_path / "math.jsonl", MATH)
    problems, _ = load_problems(path, "jsonl")
    assert [p.answer for p in problems] == ["\\frac{3}{4}", "3"]
    task = FileTask("jsonl", path, eval_size=1)
    assert task.verify("\\boxed{0.75}", problems[0].answer) == 1.0
    assert task.verify("\\boxed{\\frac{2}{3}}", problems[0].answer) == 0.0


def test_answer_field_is_configurable(tmp_path):
    rows = [{"q": "2+2?", "final": "\\boxed{4}", "answer": "wrong"}, {"q": "3+3?", "final": "6", "answer": "x"}]
    path = write_jsonl(tmp_path / "custom.jsonl", rows)
    problems, _ = load_problems(path, "jsonl", fmt="plain", prompt_key="q", answer_key="final")
    assert [(p.prompt, p.answer) for p in problems] == [("2+2?", "4"), ("3+3?", "6")]


def test_parquet_loads_like_jsonl(tmp_path):
    path = write_parquet(tmp_path / "gsm8k.parquet", GSM8K)
    problems, skipped = load_problems(path, "parquet")
    assert skipped == 0 and [p.answer for p in problems] == ["72", "1500", "42"]
    cfg = DataConfig(task="parquet", path=path, eval_size=1)
    task = get_task(cfg)
    assert [p.answer for p in task.eval_problems(5)] == ["42"]
    assert {p.answer for p in task.sample_train(20, random.Random(0))} == {"72", "1500"}
    assert task.verify("\\boxed{42}", "42") == 1.0 and task.verify("\\boxed{24}", "42") == 0.0


@pytest.mark.parametrize("bad_line, reason", [
    ("{not json", "not valid JSON"),
    ('["a", "list"]', "expected an object"),
    ('{"question": "no answer field"}', "answer field 'answer' is missing"),
    ('{"question": "q", "answer": "no marker\\n#### "}', "the answer is empty"),
    ('{"problem": "q", "solution": "no box here"}', "no \\\\boxed{} answer"),
    ('{"question": 5, "answer": "#### 3"}', None),  # a number is text enough for a question
])
def test_jsonl_bad_row_names_the_line_or_is_skipped_and_counted(tmp_path, bad_line, reason):
    path = write_jsonl(tmp_path / "bad.jsonl", GSM8K[:2], raw_lines=["", bad_line, json.dumps(GSM8K[2])])
    if reason is None:
        assert len(load_problems(path, "jsonl")[0]) == 4
        return
    with pytest.raises(DataError) as err:
        load_problems(path, "jsonl")
    msg = str(err.value)
    assert f"{path} line 4:" in msg and "data.on_bad_row=skip" in msg, msg  # line 3 is blank
    assert reason.replace("\\\\", "\\") in msg, msg
    problems, skipped = load_problems(path, "jsonl", on_bad_row="skip")
    assert skipped == 1 and [p.answer for p in problems] == ["72", "1500", "42"]


def test_parquet_bad_row_names_the_row_or_is_skipped_and_counted(tmp_path):
    rows = GSM8K[:1] + [{"question": "missing answer", "answer": None}] + GSM8K[1:]
    path = write_parquet(tmp_path / "bad.parquet", rows)
    with pytest.raises(DataError, match=r"bad\.parquet row 2: answer field 'answer' is missing"):
        load_problems(path, "parquet")
    problems, skipped = load_problems(path, "parquet", on_bad_row="skip")
    assert skipped == 1 and len(problems) == 3
    task = FileTask("parquet", path, on_bad_row="skip", eval_size=1)
    assert task.skipped_rows == 1


def test_not_a_parquet_file_is_one_clear_error(tmp_path):
    path = tmp_path / "x.parquet"
    path.write_text("hello")
    with pytest.raises(DataError, match="cannot read as parquet"):
        load_problems(str(path), "parquet")


def test_split_uses_eval_path_or_holds_out_the_last_rows(tmp_path):
    train = write_jsonl(tmp_path / "train.jsonl", GSM8K)
    test = write_jsonl(tmp_path / "test.jsonl", MATH)
    task = FileTask("jsonl", train, eval_path=test)
    assert len(task.train) == 3 and [p.answer for p in task.eval_problems(10)] == ["\\frac{3}{4}", "3"]
    with pytest.raises(DataError, match="leave none for training"):
        FileTask("jsonl", train, eval_size=3)
