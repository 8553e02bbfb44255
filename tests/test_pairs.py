"""Pair assembly, naive pairs, build-pairs (mix, shuffle, split), TRL-ready columns."""

import json

import datasets
import pytest

from mlx_scdpo.method.pairs import build_pairs, make_pair
from mlx_scdpo.method.sampling import ProblemState, SampleArgs, naive_pairs, usable_correct

RECORD = {
    "problem_id": "gsm8k/0",
    "task": "gsm8k",
    "question": "Q?",
    "gold": "7",
    "prompt": "P:",
    "prompt_ids": [1, 2],
    "samples": [
        {"text": "wrong 5", "ids": [5], "correct": False},
        {"text": "right 7", "ids": [7], "correct": True},
        {"text": "wrong 6", "ids": [6], "correct": False},
    ],
}


def test_make_pair_fields_and_ids():
    pair = make_pair(
        RECORD,
        prefix_text="Step 1\n",
        prefix_ids=[9, 10],
        chosen={"text": "rest", "ids": [11]},
        rejected={"text": "bad", "ids": [12, 13]},
        source="step_control",
        k=1,
        temperatures=[1.1, 1.2],
        round=2,
    )
    assert pair["prompt"] == "P:Step 1\n" and pair["chosen"] == "rest" and pair["rejected"] == "bad"
    assert (
        pair["prompt_ids"] == [1, 2, 9, 10]
        and pair["chosen_ids"] == [11]
        and pair["rejected_ids"] == [12, 13]
    )
    assert (pair["problem_id"], pair["source"], pair["k"], pair["temperatures"], pair["round"]) == (
        "gsm8k/0",
        "step_control",
        1,
        [1.1, 1.2],
        2,
    )


@pytest.mark.parametrize(
    "n_wrong,expected", [(1, ["wrong 5"]), (2, ["wrong 5", "wrong 6"]), (3, ["wrong 5", "wrong 6"])]
)
def test_naive_pairs_first_correct_times_first_wrong(n_wrong, expected):
    pairs = naive_pairs(RECORD, n_wrong)
    assert [p["rejected"] for p in pairs] == expected
    assert all(p["chosen"] == "right 7" and p["source"] == "naive" and p["k"] == 0 for p in pairs)


def test_no_correct_no_naive_pair():
    assert naive_pairs({**RECORD, "samples": [s for s in RECORD["samples"] if not s["correct"]]}, 2) == []


def test_reference_filters_and_stopping():
    args = SampleArgs(model="m", output_dir="o", min_correct=1, min_wrong=2, budget=5)
    s = ProblemState(problem=None, prompt_ids=[], prompt_text="")
    s.add("right", [1], {"correct": True, "extracted": "7"}, "stop")
    s.add("  right ", [1], {"correct": True, "extracted": "7"}, "stop")  # duplicate
    s.add("Sorry, I apologize: 7", [2], {"correct": True, "extracted": "7"}, "stop")  # apology
    s.add("Traceback ... ZeroDivisionError", [3], {"correct": True, "extracted": "7"}, "stop")
    s.add("wrong", [4], {"correct": False, "extracted": "5"}, "stop")
    assert (s.count(True), s.count(False), s.n_sampled) == (1, 1, 5)
    assert s.is_done(args)  # budget of 5 spent
    assert not usable_correct("an error occurred") and usable_correct("all good")


def test_build_pairs_mixes_shuffles_splits_and_loads_with_datasets(tmp_path):
    naive = [
        make_pair(
            RECORD,
            prefix_text="",
            prefix_ids=[],
            chosen={"text": f"c{i}", "ids": [i]},
            rejected={"text": f"r{i}", "ids": [i]},
            source="naive",
            k=0,
            temperatures=[],
            round=0,
        )
        for i in range(30)
    ]
    sc = [
        make_pair(
            RECORD,
            prefix_text="s\n",
            prefix_ids=[3],
            chosen={"text": f"c{i}", "ids": [i]},
            rejected={"text": f"r{i}", "ids": [i]},
            source="step_control",
            k=1,
            temperatures=[1.1],
            round=1,
        )
        for i in range(20)
    ]
    for name, rows in (("naive.jsonl", naive), ("sc.jsonl", sc)):
        (tmp_path / name).write_text("".join(json.dumps(r) + "\n" for r in rows))
    inputs = [str(tmp_path / "naive.jsonl"), str(tmp_path / "sc.jsonl")]
    r = build_pairs(inputs, str(tmp_path / "out"), valid_fraction=0.1, seed=3)
    assert r == {"train": 45, "valid": 5, "by_source": {"naive": 30, "step_control": 20}}
    again = build_pairs(inputs, str(tmp_path / "out2"), valid_fraction=0.1, seed=3)
    assert again == r
    assert (tmp_path / "out" / "train.jsonl").read_text() == (tmp_path / "out2" / "train.jsonl").read_text()
    ds = datasets.load_dataset(
        "json", data_files={"train": str(tmp_path / "out" / "train.jsonl")}, split="train"
    )
    assert {"prompt", "chosen", "rejected", "problem_id", "source", "k", "temperatures", "round"} <= set(
        ds.column_names
    )
    assert isinstance(ds[0]["prompt"], str) and len(ds) == 45
    # The data-equal control keeps as many naive pairs as asked.
    r = build_pairs(inputs, str(tmp_path / "out3"), valid_fraction=0.0, max_naive=10)
    assert r["by_source"] == {"naive": 10, "step_control": 20}


def test_build_pairs_conversational(tmp_path):
    pair = make_pair(
        RECORD,
        prefix_text="s1\n",
        prefix_ids=[3],
        chosen={"text": "c", "ids": [1]},
        rejected={"text": "r", "ids": [2]},
        source="step_control",
        k=1,
        temperatures=[1.1],
        round=1,
    )
    (tmp_path / "p.jsonl").write_text(json.dumps(pair) + "\n")
    build_pairs([str(tmp_path / "p.jsonl")], str(tmp_path / "o"), valid_fraction=0.0, conversational=True)
    row = json.loads((tmp_path / "o" / "train.jsonl").read_text())
    assert row["prompt"] == [{"role": "user", "content": "Q?"}]
    assert row["chosen"] == [{"role": "assistant", "content": "s1\nc"}]
    assert row["rejected"] == [{"role": "assistant", "content": "s1\nr"}]
    assert "prompt_ids" not in row


def test_build_pairs_bad_input(tmp_path):
    from eval.errors import UserError

    (tmp_path / "p.jsonl").write_text('{"prompt": "a", "chosen": "b"}\n')
    with pytest.raises(UserError, match="p.jsonl:1: field 'rejected' is missing"):
        build_pairs([str(tmp_path / "p.jsonl")], str(tmp_path / "o"))


# Truncated responses (finish_reason "length": cut off by max_tokens) as TRL tests them: literal arrays.
TRUNC = {
    **RECORD,
    "samples": [
        {"text": "wrong 5 and on and", "ids": [5, 8, 8], "correct": False, "finish_reason": "length"},
        {"text": "right 7", "ids": [7], "correct": True, "finish_reason": "stop"},
        {"text": "wrong 6", "ids": [6], "correct": False, "finish_reason": "stop"},
    ],
}


@pytest.mark.parametrize("include, expected", [(False, [[6]]), (True, [[5, 8, 8], [6]])])
def test_truncated_wrong_solutions_are_no_rejected_side_by_default(include, expected):
    pairs = naive_pairs(TRUNC, 2, include_truncated=include)
    assert [p["rejected_ids"] for p in pairs] == expected
    assert [(p["chosen_finish_reason"], p["rejected_finish_reason"]) for p in pairs] == [
        ("stop", "length"),
        ("stop", "stop"),
    ][-len(expected) :]


def test_truncated_wrong_solutions_do_not_count_as_wanted_wrong_ones():
    args = SampleArgs(model="m", output_dir="o", min_correct=1, min_wrong=1, budget=9)
    s = ProblemState(problem=None, prompt_ids=[], prompt_text="")
    s.add("right", [1], {"correct": True, "extracted": "7"}, "stop")
    s.add("wrong and", [4, 4], {"correct": False, "extracted": None}, "length")
    assert (s.count(False), s.count(False, include_truncated=False)) == (1, 0)
    assert not s.is_done(args) and s.is_done(
        SampleArgs(model="m", output_dir="o", budget=9, include_truncated=True)
    )


class CharTokenizer:
    """One id per character (ord), EOS 2: enough to see where EOS goes."""

    eos_token_id = 2

    def encode(self, text, add_special_tokens=True):
        return [ord(c) for c in text]


@pytest.mark.parametrize(
    "chosen_reason, rejected_reason, chosen, rejected",
    [
        ("stop", "stop", [7, 8, 2], [9, 2]),
        ("stop", "length", [7, 8, 2], [9]),  # a cut-off response gets no EOS
        ("length", "max_rounds", [7, 8], [9]),
        (None, None, [7, 8, 2], [9, 2]),  # pairs without finish reasons: as before
    ],
)
def test_no_eos_after_a_truncated_response(chosen_reason, rejected_reason, chosen, rejected):
    from mlx_scdpo.training.preference_data import TokenizedPair, sequence_arrays, tokenize_pair

    pair = {
        "prompt": "p",
        "chosen": "c",
        "rejected": "r",
        "prompt_ids": [5, 6],
        "chosen_ids": [7, 8],
        "rejected_ids": [9],
        "chosen_finish_reason": chosen_reason,
        "rejected_finish_reason": rejected_reason,
    }
    tp = tokenize_pair(CharTokenizer(), pair)
    assert tp == TokenizedPair([5, 6], chosen, rejected)
    if (chosen_reason, rejected_reason) == ("stop", "length"):
        arrays = sequence_arrays([tp], pad_to_multiple=1)
        assert arrays["inputs"].tolist() == [[5, 6, 7, 8], [5, 6, 0, 0]]
        assert arrays["targets"].tolist() == [[6, 7, 8, 2], [6, 9, 0, 0]]
        assert arrays["mask"].tolist() == [[0, 1, 1, 1], [0, 1, 0, 0]]


def test_no_eos_after_a_truncated_text_response():
    from mlx_scdpo.training.preference_data import tokenize_pair

    pair = {"prompt": "p", "chosen": "ab", "rejected": "c", "rejected_finish_reason": "length"}
    tp = tokenize_pair(CharTokenizer(), pair)
    assert (tp.prompt, tp.chosen, tp.rejected) == ([112], [97, 98, 2], [99])
