"""The generate -> execute -> continue loop, on the tiny model with scripted (forced) tokens.

A logits processor forces a transcript token by token, so the real model, batching, KV
caches and sandboxes all run, and the expected text is known exactly.
"""

import mlx.core as mx
import pytest
from mlx_lm import load

from eval.blocks import MARKDOWN
from mlx_scdpo.generation.code_loop import generate_with_code
from mlx_scdpo.sandbox.pool import SandboxPool


def forcing(transcript):
    def proc(context, logits):
        n = context.size if hasattr(context, "size") else len(context)
        target = transcript[n] if n < len(transcript) else transcript[-1]
        return mx.where(mx.arange(logits.shape[-1]) == target, 0.0, -1e9).astype(logits.dtype)[None]

    return proc


@pytest.fixture(scope="module")
def model_and_tokenizer(tiny_model):
    return load(str(tiny_model))


def _script(tok, prompt, pieces, outputs):
    """Prompt tokens + model pieces interleaved with the execution blocks the loop will insert."""
    ids = list(prompt)
    for i, piece in enumerate(pieces):
        ids += tok.encode(piece, add_special_tokens=False)
        if i < len(outputs):
            ids += tok.encode(MARKDOWN.execution_block(outputs[i]), add_special_tokens=False)
    return ids + [tok.eos_token_id]


CASES = [
    (["Compute.\n```python\nx = 6 * 7\nprint(x)\n```", "\nSo the answer is \\boxed{42}."], ["42\n"]),
    (["```python\ny = 5\n```", "\nThen:\n```python\ny + 1\n```", "\nDone: \\boxed{6}."], ["", "6\n"]),
    (["No code here, \\boxed{1}."], []),
]


@pytest.mark.parametrize("schedule", ["continuous", "rounds"])
def test_code_loop_runs_blocks_statefully(model_and_tokenizer, schedule):
    model, tok = model_and_tokenizer
    prompts = [tok.encode(f"Problem {i}:", add_special_tokens=False) for i in range(len(CASES))]
    transcripts = [_script(tok, p, pieces, outs) for p, (pieces, outs) in zip(prompts, CASES)]
    with SandboxPool(size=2, timeout=5.0) as pool:
        got = {
            c.index: c
            for c in generate_with_code(
                model,
                tok,
                prompts,
                pool,
                max_tokens=200,
                batch_size=3,
                schedule=schedule,
                logits_processors=lambda i: [forcing(transcripts[i])],
            )
        }
    for i, (pieces, outs) in enumerate(CASES):
        expected = "".join(
            p + (MARKDOWN.execution_block(outs[j]) if j < len(outs) else "") for j, p in enumerate(pieces)
        )
        c = got[i]
        assert c.text == expected
        assert c.finish_reason == "stop" and c.executions == len(outs)
        assert c.tokens == transcripts[i][len(prompts[i]) : -1]
        n_exec = sum(len(tok.encode(MARKDOWN.execution_block(o), add_special_tokens=False)) for o in outs)
        assert c.gen_mask.count(0) == n_exec and len(c.gen_mask) == len(c.tokens)
    assert "[no output]" in got[1].text  # an empty output is shown as such


def test_round_cap(model_and_tokenizer):
    model, tok = model_and_tokenizer
    pieces, outs = CASES[1]
    prompt = tok.encode("Problem:", add_special_tokens=False)
    transcript = _script(tok, prompt, pieces, outs)
    with SandboxPool(size=1, timeout=5.0) as pool:
        (c,) = list(
            generate_with_code(
                model,
                tok,
                [prompt],
                pool,
                max_tokens=200,
                max_rounds=1,
                logits_processors=lambda i: [forcing(transcript)],
            )
        )
    assert c.finish_reason == "max_rounds" and c.executions == 1
    assert c.text.endswith("```python\ny + 1\n```")


def test_setup_code_rebuilds_sandbox_state(model_and_tokenizer):
    model, tok = model_and_tokenizer
    pieces, outs = ["```python\nprint(y * 2)\n```", "\nSo \\boxed{10}."], ["10\n"]
    prompt = tok.encode("Prefix kept:", add_special_tokens=False)
    transcript = _script(tok, prompt, pieces, outs)
    with SandboxPool(size=1, timeout=5.0) as pool:
        (c,) = list(
            generate_with_code(
                model,
                tok,
                [prompt],
                pool,
                max_tokens=100,
                logits_processors=lambda i: [forcing(transcript)],
                setup_code=lambda i: ["y = 5"],
            )
        )
    assert "```output\n10\n```" in c.text
