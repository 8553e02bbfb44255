"""The temperature ramp: it counts steps as split_steps cuts them, switches exactly on the token
after a step's end, never waits for the newest token, and reports what it applied; seeded sampling."""

import mlx.core as mx
import pytest

from eval.blocks import MARKDOWN
from mlx_scdpo.generation.ramp import SeededSampler, StepRamp, step_temperatures
from mlx_scdpo.method.steps import split_steps

NL = 5  # the newline token in the first tests


class CharTokenizer:
    """ids 0..127 are ASCII characters, 5 is overridden as "\n" in ``PIECES``."""

    def __init__(self, pieces=None):
        self.pieces = pieces or {i: chr(i) for i in range(128)}

    def get_vocab(self):
        return {f"t{i}": i for i in self.pieces}

    def decode(self, ids):
        return "".join(self.pieces.get(i, "") for i in ids)

    def batch_decode(self, batch):
        return [self.decode(ids) for ids in batch]

    def encode(self, text):
        inverse = {v: k for k, v in self.pieces.items()}
        return [inverse[c] for c in text]


class LeadingSpaceTokenizer(CharTokenizer):
    """Decodes as SentencePiece does: a text's leading space is dropped (so pieces do not concatenate)."""

    def decode(self, ids):
        text = super().decode(ids)
        return text[1:] if text.startswith(" ") else text


PIECES = CharTokenizer({1: "q", 2: "?", NL: "\n", 7: "a", 8: "b", 9: "c"})


def applied_temperatures(contexts, tokenizer=PIECES, style="cot", fmt=None, unit="line", **schedule):
    """Temperatures the processor applies, one call per context (as mlx-lm calls it)."""
    proc = StepRamp(tokenizer, style, fmt, unit).processor(**schedule)
    logits = mx.ones((1, 128))
    return [round(1.0 / proc(mx.array(c), logits)[0, 0].item(), 6) for c in contexts], proc


def test_temperature_switches_on_the_token_after_a_boundary():
    prompt = [1, 2, NL]
    gen = [7, 8, NL, 7, NL, NL, 9, NL, 7, NL, 7]
    temps, proc = applied_temperatures([prompt + gen[:i] for i in range(len(gen) + 1)])
    # The temperature used to sample gen[i] is temps[i].
    assert temps == pytest.approx([1.1, 1.1, 1.1, 1.2, 1.2, 1.3, 1.3, 1.3, 1.4, 1.4, 1.4, 1.4])
    # What the pair records is read back from the processor: one per step, at its first token.
    assert step_temperatures(PIECES, gen, proc) == pytest.approx([1.1, 1.2, 1.3, 1.4, 1.4])
    assert proc.temperatures() == pytest.approx(dict(enumerate(temps)))


def test_bulk_inserted_tokens_do_not_count_but_are_scanned():
    temps, _ = applied_temperatures([[1, NL], [1, NL, 7], [1, NL, 7, NL, NL, NL, 3]])
    # The execution-like insert holds a newline after content: a step ended inside it.
    assert temps == pytest.approx([1.1, 1.1, 1.2])


def test_observed_tokens_need_no_read():
    # The generation loop passes each token it receives (observe): the processor then reads nothing
    # from its context; the newest token (still being computed) is looked up lazily.
    proc = StepRamp(PIECES).processor()
    prompt, gen = [1, 2], [7, NL, 8, NL]
    temps = []
    for i in range(len(gen) + 1):
        context = prompt + gen[:i]
        if i >= 2:
            proc.observe([gen[i - 2]])  # a step behind, as BatchGenerator hands tokens back
        temps.append(round(1.0 / proc(mx.array(context), mx.ones((1, 128)))[0, 0].item(), 6))
        assert proc.tokens == gen[: max(i - 1, 0)]  # only observed tokens are known: nothing was read
    assert temps == pytest.approx([1.1, 1.1, 1.2, 1.2, 1.3])
    # Without observe the processor reads all but the newest token from its context.
    temps2, proc2 = applied_temperatures([prompt + gen[:i] for i in range(len(gen) + 1)])
    assert temps2 == temps and proc2.tokens == gen[:-1]


TEXTS = [
    (
        "cot",
        None,
        "line",
        " We add.\nThen $$\na = 1\nb = 2\n$$\nso\n\n\\begin{align}\nx\\\\\ny\n\\end{align}\ndone\n",
    ),
    ("cot", None, "paragraph", "First.\nStill first.\n\nSecond \\[\n\n\\]\n \n\nThird\n```\n\n```\n\nEnd"),
    ("cot", None, "line", "a\n```python\nx = 1\n\ny = 2\n```\n\\[ 1\n\\]\n$$ x $$ y\nz"),
    (
        "code",
        MARKDOWN,
        "line",
        "We compute.\n```python\nprint(6 * 7)\n```\n```output\n42\n```\nSo\n\nit is 42.",
    ),
]


@pytest.mark.parametrize("tokenizer", [CharTokenizer, LeadingSpaceTokenizer])
@pytest.mark.parametrize("style, fmt, unit, text", TEXTS)
def test_ramp_counts_the_steps_split_steps_cuts(style, fmt, unit, text, tokenizer):
    # Character tokens: at every position, the step the ramp samples in is the number of
    # steps of split_steps(text) that are complete there (the rest of the text cannot change them).
    tok = tokenizer()
    assert StepRamp(tok).pieces_concatenate == (tokenizer is CharTokenizer)
    ids = tok.encode(text)
    temps, proc = applied_temperatures(
        [[1] + ids[:i] for i in range(len(ids) + 1)], tok, style, fmt, unit, t0=1.0, dt=1.0, tmax=1e6
    )
    counts = [round(t - 1) for t in temps]
    steps = split_steps(text, style, fmt, unit)
    ends, pos = [], 0
    for piece in steps.steps:
        pos += len(piece)
        ends.append(pos)
    for i in range(len(ids) + 1):
        done = split_steps(text[:i] + "x", style, fmt, unit)  # "x": a character that starts or extends a step
        assert counts[i] == sum(k != "execution" for k in done.kinds[:-1]), (i, text[:i])
    # Right after each step of split_steps that ends with its own delimiter (a line, a block; unmarked
    # text between blocks ends only once the next block's opener is complete).
    for n, (end, step) in enumerate(zip(ends[:-1], steps.steps), 1):
        if fmt is None or step.startswith(tuple(op for _, op in fmt.openers())):
            assert counts[end] == sum(k != "execution" for k in steps.kinds[:n])
    generated = [s for s, k in zip(steps.steps, steps.kinds) if k != "execution"]
    assert step_temperatures(tok, ids, proc, style, fmt, unit) == pytest.approx(
        [1.0 + i for i in range(len(generated))]
    )


def test_multibyte_characters_split_across_tokens(tiny_model):
    # Byte-level BPE spells "∑" and "α" as several tokens: the scan waits for a character's last byte.
    from mlx_lm import load

    _, tok = load(str(tiny_model))
    text = "∑ a\n$$\nα\n$$\nβγ\n\nδ\nz"
    ids = tok.encode(text, add_special_tokens=False)
    assert len(ids) > len(text)  # some characters take several tokens
    temps, proc = applied_temperatures(
        [[1] + ids[:i] for i in range(len(ids) + 1)], tok, t0=1.0, dt=1.0, tmax=1e6
    )
    for i in range(len(ids) + 1):
        prefix = tok.decode(ids[:i]).rstrip("\ufffd")
        assert round(temps[i] - 1) == len(split_steps(prefix + "x").steps) - 1, (i, prefix)
    assert step_temperatures(tok, ids, proc) == pytest.approx([1.0, 2.0, 3.0, 4.0, 5.0])


def test_ramp_on_the_tiny_tokenizer_matches_split_steps(tiny_model):
    from mlx_lm import load

    from mlx_scdpo.generation.batched import generate_batched

    model, tok = load(str(tiny_model))
    text = "x = 1\ny = 2\n\n$$\na\nb\n$$\nThe answer is 3.\nz"
    script = tok.encode(text, add_special_tokens=False)
    prompt = tok.encode("Question: what?\n", add_special_tokens=False)

    def force(context, logits):
        n = min(context.size - len(prompt), len(script) - 1)
        return logits + mx.where(mx.arange(logits.shape[-1]) == script[n], 0.0, -1e9)

    ramp = StepRamp(tok)
    proc = ramp.processor()
    (c,) = generate_batched(
        model,
        tok,
        [prompt],
        max_tokens=len(script),
        sampler=SeededSampler(3),
        logits_processors=[[proc, force]],
        stop_tokens=[],
    )
    assert c.tokens == script
    assert [len(s) for s in split_steps(text).steps] == [6, 7, 10, 17, 1]
    assert step_temperatures(tok, c.tokens, proc) == pytest.approx([1.1, 1.2, 1.3, 1.4, 1.4])


def test_seeded_sampler_same_seed_same_samples_different_seed_differs():
    logprobs = mx.log(mx.ones((4, 50)) / 50)
    a = [SeededSampler(1)(logprobs).tolist() for _ in range(1)]
    s1, s2, s3 = SeededSampler(1), SeededSampler(1), SeededSampler(2)
    seq1 = [s1(logprobs).tolist() for _ in range(5)]
    seq2 = [s2(logprobs).tolist() for _ in range(5)]
    seq3 = [s3(logprobs).tolist() for _ in range(5)]
    assert seq1 == seq2 and seq1 != seq3 and a[0] == seq1[0]
    assert SeededSampler(0, temp=0)(mx.array([[0.0, 3.0, 1.0]])).tolist() == [1]


def test_stable_seed_is_the_same_in_every_process():
    # hash() of a string differs between processes; the samplers' seeds must not.
    import os
    import subprocess
    import sys

    from mlx_scdpo.generation.ramp import stable_seed

    code = "from mlx_scdpo.generation.ramp import stable_seed; print(stable_seed(0, 1, 'cot'), stable_seed(0, 'gsm8k/1', 2))"
    outs = {
        subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "PYTHONHASHSEED": h},
        ).stdout
        for h in ("1", "2")
    }
    assert outs == {f"{stable_seed(0, 1, 'cot')} {stable_seed(0, 'gsm8k/1', 2)}\n"}
    assert stable_seed(0, 1, "cot") != stable_seed(0, 2, "cot") and 0 <= stable_seed(5) < 2**31


@pytest.mark.parametrize("loop", ["generate_batched", "code loop", "windows"])
def test_generation_loops_pass_tokens_so_the_ramp_never_reads(tiny_model, loop):
    from mlx_lm import load

    from eval.blocks import MARKDOWN
    from mlx_scdpo.generation.batched import generate_batched
    from mlx_scdpo.generation.code_loop import generate_with_code
    from mlx_scdpo.generation.windows import Request, stream_completions
    from mlx_scdpo.sandbox.pool import SandboxPool

    model, tok = load(str(tiny_model))
    text = "x = 1\n```python\nprint(2)\n```\ny = 2\n\nz = 3\n" * 2
    script = tok.encode(text, add_special_tokens=False)
    prompt = tok.encode("Question: what?\n", add_special_tokens=False)

    def force(context, logits):  # the script, from wherever the sequence stands
        n = min(context.size - len(prompt), len(script) - 1)
        return logits + mx.where(mx.arange(logits.shape[-1]) == script[n], 0.0, -1e9)

    fmt = MARKDOWN if loop == "code loop" else None
    ramp = StepRamp(tok, "code" if fmt else "cot", fmt)
    procs = [ramp.processor() for _ in range(3)]
    if loop == "generate_batched":
        out = list(
            generate_batched(
                model,
                tok,
                [prompt] * 3,
                max_tokens=24,
                stop_tokens=[],
                logits_processors=[[p, force] for p in procs],
            )
        )
    elif loop == "code loop":
        with SandboxPool(size=1, timeout=5) as pool:
            out = list(
                generate_with_code(
                    model,
                    tok,
                    [prompt] * 3,
                    pool,
                    fmt=fmt,
                    max_tokens=16,
                    max_rounds=1,
                    logits_processors=lambda i: [procs[i], force],
                )
            )
    else:
        reqs = [Request(i, prompt, [p, force]) for i, p in enumerate(procs)]
        out = list(
            stream_completions(
                model,
                tok,
                lambda n: [reqs.pop() for _ in range(min(n, len(reqs)))],
                max_tokens=24,
                stop_tokens=[],
            )
        )
    assert len(out) == 3
    assert [p.reads for p in procs] == [0, 0, 0] and all(len(p.applied) >= 16 for p in procs)
