"""DPO losses against an independent numpy implementation; tokenization and masks against literal arrays."""

import mlx.core as mx
import numpy as np
import pytest

from mlx_scdpo.training.dpo import dpo_loss
from mlx_scdpo.training.preference_data import TokenizedPair, bucketed_batches, sequence_arrays, tokenize_pair


def np_log_sigmoid(x):
    return -np.logaddexp(0, -x)


def np_dpo(pc, pr, rc, rr, beta, loss_type, ls):
    logits = (pc - pr) - (rc - rr)
    if loss_type == "sigmoid":
        return -np_log_sigmoid(beta * logits) * (1 - ls) - np_log_sigmoid(-beta * logits) * ls
    if loss_type == "ipo":
        return (logits - 1 / (2 * beta)) ** 2
    return np.maximum(0, 1 - beta * logits)


@pytest.mark.parametrize("loss_type", ["sigmoid", "ipo", "hinge"])
@pytest.mark.parametrize("beta,ls", [(0.1, 0.0), (0.5, 0.0), (0.1, 0.2)])
def test_losses_match_numpy(loss_type, beta, ls):
    rng = np.random.default_rng(0)
    pc, pr, rc, rr = (rng.normal(-40, 10, 16).astype(np.float32) for _ in range(4))
    losses, cr, rj = dpo_loss(
        *(mx.array(a) for a in (pc, pr, rc, rr)),
        beta=beta,
        loss_type=loss_type,
        label_smoothing=ls if loss_type == "sigmoid" else 0.0,
    )
    expected = np_dpo(pc, pr, rc, rr, beta, loss_type, ls if loss_type == "sigmoid" else 0.0)
    np.testing.assert_allclose(np.array(losses), expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.array(cr), beta * (pc - rc), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.array(rj), beta * (pr - rr), rtol=1e-5, atol=1e-5)


def test_sigmoid_loss_at_zero_margin_is_log2():
    losses, _, _ = dpo_loss(mx.array([1.0]), mx.array([1.0]), mx.array([1.0]), mx.array([1.0]))
    assert losses.item() == pytest.approx(np.log(2))


def test_sequence_arrays_literal():
    pairs = [
        TokenizedPair(prompt=[1, 2], chosen=[3, 4, 9], rejected=[5, 9]),
        TokenizedPair(prompt=[6], chosen=[7, 9], rejected=[8, 8, 8, 9]),
    ]
    got = sequence_arrays(pairs, pad_id=0, pad_to_multiple=1)
    # rows: chosen 0, chosen 1, rejected 0, rejected 1; length = max(len(seq)) - 1 = 4
    np.testing.assert_array_equal(got["inputs"], [[1, 2, 3, 4], [6, 7, 0, 0], [1, 2, 5, 0], [6, 8, 8, 8]])
    np.testing.assert_array_equal(got["targets"], [[2, 3, 4, 9], [7, 9, 0, 0], [2, 5, 9, 0], [8, 8, 8, 9]])
    np.testing.assert_array_equal(got["mask"], [[0, 1, 1, 1], [1, 1, 0, 0], [0, 1, 1, 0], [1, 1, 1, 1]])


def test_padding_to_multiple():
    got = sequence_arrays([TokenizedPair([1], [2, 9], [3, 9])], pad_to_multiple=8)
    assert got["inputs"].shape == (2, 8) and got["mask"].sum() == 4


class FakeTokenizer:
    """Character-level tokenizer with a ChatML-like template (ids: ord(c))."""

    eos_token_id = 2

    def encode(self, text, add_special_tokens=True):
        return ([1] if add_special_tokens else []) + [ord(c) for c in text]

    def apply_chat_template(self, messages, add_generation_prompt=False, tokenize=False):
        out = "".join(f"<{m['role']}>{m['content']}|" for m in messages)
        return out + ("<assistant>" if add_generation_prompt else "")


def test_tokenize_text_pair_literal():
    tok = FakeTokenizer()
    p = tokenize_pair(tok, {"prompt": "Q:", "chosen": "ab", "rejected": "c"})
    assert p == TokenizedPair(prompt=[1, ord("Q"), ord(":")], chosen=[97, 98, 2], rejected=[99, 2])


def test_token_ids_are_used_as_they_are_and_eos_is_not_doubled():
    p = tokenize_pair(
        FakeTokenizer(),
        {
            "prompt": "x",
            "chosen": "y",
            "rejected": "z",
            "prompt_ids": [5, 6],
            "chosen_ids": [7, 2],
            "rejected_ids": [8],
        },
    )
    assert p == TokenizedPair([5, 6], [7, 2], [8, 2])


def test_chat_template_pair_literal():
    tok = FakeTokenizer()
    pair = {
        "prompt": [{"role": "user", "content": "Q"}],
        "chosen": [{"role": "assistant", "content": "A"}],
        "rejected": [{"role": "assistant", "content": "B"}],
    }
    p = tokenize_pair(tok, pair)
    assert p.prompt == [ord(c) for c in "<user>Q|<assistant>"]
    assert p.chosen == [ord("A"), ord("|"), 2] and p.rejected == [ord("B"), ord("|"), 2]
    mask = sequence_arrays([p], pad_to_multiple=1)["mask"]
    np.testing.assert_array_equal(mask[0], [0] * (len(p.prompt) - 1) + [1, 1, 1])


def test_chat_template_pair_with_a_real_chatml_tokenizer(tiny_model):
    """The code path depends on what a real template renders: the tiny model's tokenizer has a ChatML
    template (``mlx_scdpo.toy.tiny_model.CHAT_TEMPLATE``), whose newline after ``<|im_end|>`` is not part of a response
    and whose ``<|im_end|>`` (this tokenizer's eos) is not doubled; a cut-off response has no end marker."""
    from mlx_lm import load

    _, tok = load(str(tiny_model))
    assert tok.chat_template is not None and tok.eos_token == "<|im_end|>"
    pair = {
        "prompt": [{"role": "user", "content": "Q"}],
        "chosen": [{"role": "assistant", "content": "A"}],
        "rejected": [{"role": "assistant", "content": "B"}],
    }
    p = tokenize_pair(tok, pair)
    assert tok.decode(p.prompt) == "<|im_start|>user\nQ<|im_end|>\n<|im_start|>assistant\n"
    assert tok.decode(p.chosen) == "A<|im_end|>" and tok.decode(p.rejected) == "B<|im_end|>"
    assert p.chosen.count(tok.eos_token_id) == 1 and p.chosen[-1] == tok.eos_token_id
    cut = tokenize_pair(tok, {**pair, "rejected_finish_reason": "length"})
    assert cut.chosen == p.chosen and tok.decode(cut.rejected) == "B" and tok.eos_token_id not in cut.rejected


def test_truncation_cuts_prompt_from_the_left_then_responses():
    pair = {
        "prompt_ids": list(range(10, 30)),
        "chosen_ids": [1] * 8,
        "rejected_ids": [3] * 4,
        "prompt": "",
        "chosen": "",
        "rejected": "",
    }
    p = tokenize_pair(FakeTokenizer(), pair, max_length=16, max_prompt_length=10)
    assert p.prompt == list(range(20, 30))
    assert p.chosen == [1] * 6 and p.rejected == [3] * 4 + [2]


def test_bucketed_batches_cover_everything_with_similar_lengths():
    lengths = [5, 50, 6, 51, 7, 52, 8, 53]
    batches = bucketed_batches(lengths, 2, seed=0, epoch=0)
    assert sorted(i for b in batches for i in b) == list(range(8))
    assert all(max(lengths[i] for i in b) - min(lengths[i] for i in b) <= 2 for b in batches)
    assert bucketed_batches(lengths, 2, 0, 0) == batches and bucketed_batches(lengths, 2, 0, 1) != batches
