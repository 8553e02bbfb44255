"""The temperature ramp processor switches exactly at step boundaries; seeded sampling."""

import mlx.core as mx
import pytest

from mlx_scdpo.ramp import SeededSampler, StepTemperatureProcessor
from mlx_scdpo.steps import step_temperatures, temperature_for_step

NL = 5  # the boundary token in these tests


def applied_temperatures(contexts):
    mask = mx.zeros((10,))
    mask[NL] = 1.0
    proc = StepTemperatureProcessor(mask)
    logits = mx.ones((1, 10))
    return [round(1.0 / proc(mx.array(c), logits)[0, 0].item(), 6) for c in contexts]


def test_temperature_switches_on_the_token_after_a_boundary():
    prompt = [1, 2, NL]
    gen = [7, 8, NL, 7, NL, NL, 9, NL, 7, NL, 7]
    contexts = [prompt + gen[:i] for i in range(len(gen) + 1)]
    temps = applied_temperatures(contexts)
    # The temperature used to sample gen[i] is temps[i].
    expected = [1.1, 1.1, 1.1, 1.2, 1.2, 1.3, 1.3, 1.3, 1.4, 1.4, 1.4, 1.4]
    assert temps == pytest.approx(expected)
    # The recorded per-step temperatures agree with what was applied.
    pieces = ["\n" if t == NL else "x" for t in gen]
    assert step_temperatures(pieces) == pytest.approx([1.1, 1.2, 1.3, 1.4, 1.4])


def test_bulk_inserted_tokens_do_not_count():
    temps = applied_temperatures([[1, NL], [1, NL, 7], [1, NL, 7, NL, NL, NL, 3]])
    assert temps == pytest.approx([temperature_for_step(0)] * 3)


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

    from mlx_scdpo.ramp import stable_seed

    code = "from mlx_scdpo.ramp import stable_seed; print(stable_seed(0, 1, 'cot'), stable_seed(0, 'gsm8k/1', 2))"
    outs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           env={**os.environ, "PYTHONHASHSEED": h}).stdout for h in ("1", "2")}
    assert outs == {f"{stable_seed(0, 1, 'cot')} {stable_seed(0, 'gsm8k/1', 2)}\n"}
    assert stable_seed(0, 1, "cot") != stable_seed(0, 2, "cot") and 0 <= stable_seed(5) < 2**31
