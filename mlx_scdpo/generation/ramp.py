"""Seeded sampling and the per-step temperature ramp as MLX logits processors.

``StepTemperatureProcessor`` divides the logits by ``min(T0 + i * dT, Tmax)`` where ``i``
is the number of steps the sequence has completed, counted with ``mlx_scdpo.method.steps.StepScanner``
(the definition ``split_steps`` cuts with, so ``--step-unit``, display math, ``align``
environments, fences and code blocks count alike in both). The temperature switches on the
token right after the one that ends a step.

Nothing waits for the GPU: when the processor runs, the sequence's newest token is still
being computed. The older ones reach the host through the generation loop
(``observe``: each token it receives, each inserted execution block), so the processor
scans their text on the host and looks the newest token up, lazily, in a table of "does
this token end a step from here", one per scanner state, shared by every sequence of a run
(``StepRamp``). A loop that does not observe still gets the right temperatures: the
processor then reads the older tokens from its context (a wait per step). Execution
outputs never count as steps.
Each applied temperature is kept by position (``temperatures()``), so what a pair records
is what was applied (``step_temperatures``).

``SeededSampler`` draws from an explicit PRNG key that it splits on every call: the
same seed gives the same samples and different seeds differ, independent of MLX's
global random state (mlx-lm's compiled sampler captures that state).
"""

from __future__ import annotations

import bisect
import hashlib

import mlx.core as mx
import numpy as np

from mlx_scdpo.method.steps import DT, T0, TMAX, StepScanner, split_steps


class StepRamp:
    """What every sequence's ramp shares: each token's text and, per scanner state, which
    tokens would end a step (built on first use of each state; a few dozen states occur)."""

    def __init__(self, tokenizer, style: str = "cot", fmt=None, unit: str = "line"):
        self.tokenizer, self.style, self.fmt, self.unit = tokenizer, style, fmt, unit
        vocab = tokenizer.get_vocab()
        self.size = max(max(vocab.values()) + 1, getattr(tokenizer, "vocab_size", 0) or 0)
        pieces = tokenizer.batch_decode([[i] for i in range(self.size)])
        self.pieces = pieces
        # Byte-level BPE: a text is its tokens' pieces end to end (a SentencePiece piece alone
        # drops its leading space). Checked on pairs of tokens spread over the vocabulary.
        probe = range(0, self.size - 1, max(1, self.size // 256))
        self.pieces_concatenate = all(
            tokenizer.decode([i, i + 1]) == pieces[i] + pieces[i + 1] for i in probe
        )
        triggers = self.scanner().trigger_chars()
        # Only a token holding the last character of a step end can end a step.
        self.candidates = [(i, p) for i, p in enumerate(pieces) if any(c in p for c in triggers)]
        self._ends: dict[tuple, mx.array] = {}

    def scanner(self) -> StepScanner:
        return StepScanner(self.style, self.fmt, self.unit)

    def step_ends(self, scanner: StepScanner) -> mx.array:
        """Per token id: generated steps it would complete after ``scanner``'s text."""
        key = scanner.key()
        if key not in self._ends:
            ends = np.zeros(self.size, dtype=np.uint8)  # a few dozen states x the vocabulary: keep it small
            for i, piece in self.candidates:
                s = scanner.copy()
                s.feed(piece)
                ends[i] = s.generated - scanner.generated
            self._ends[key] = mx.array(ends)
        return self._ends[key]

    def processor(self, t0: float = T0, dt: float = DT, tmax: float = TMAX) -> "StepTemperatureProcessor":
        return StepTemperatureProcessor(self, t0, dt, tmax)


class StepTemperatureProcessor:
    """Per-sequence logits processor implementing the step-wise temperature ramp."""

    def __init__(self, ramp: StepRamp, t0: float = T0, dt: float = DT, tmax: float = TMAX):
        self.ramp, self.t0, self.dt, self.tmax = ramp, t0, dt, tmax
        self.scanner = ramp.scanner()
        self.start = None  # context length at the first call (the prompt)
        self.seen = 0
        self.tokens: list[int] = []  # generated (and inserted) tokens known on the host
        self.base = 0  # tokens[:base] are scanned to their last character
        self.fed = 0  # characters of the text of tokens[base:] already scanned
        self.applied: dict[int, mx.array] = {}  # position after the prompt -> temperature
        self.reads = 0  # calls that had to read tokens from the context (a wait): none when observed

    def _known(self, tokens: list[int]) -> None:
        pieces = self.ramp.pieces
        if (
            self.base == len(self.tokens)
            and self.ramp.pieces_concatenate
            and all(t < len(pieces) and "\ufffd" not in pieces[t] for t in tokens)
        ):  # whole characters
            self.tokens += tokens
            self.scanner.feed("".join(pieces[t] for t in tokens))
            self.base = len(self.tokens)
            return
        self.tokens += tokens
        # Decode only what is new, after one anchor token (so a SentencePiece leading space survives).
        decode = self.ramp.tokenizer.decode
        anchor = self.tokens[self.base - 1 : self.base] if self.base else []
        text = decode(anchor + self.tokens[self.base :])[len(decode(anchor)) if anchor else 0 :]
        stable = text.rstrip("\ufffd")  # a character whose bytes are not all here yet waits
        self.scanner.feed(stable[self.fed :])
        if len(stable) == len(text):
            self.base, self.fed = len(self.tokens), 0
        else:
            self.fed = max(self.fed, len(stable))

    def observe(self, tokens: list[int]) -> None:
        """This sequence's next tokens, known on the host: the generation loop passes each token
        it receives and each inserted execution block, so the processor never reads an array."""
        self._known(list(tokens))

    def __call__(self, context: mx.array, logits: mx.array) -> mx.array:
        n = context.size
        if self.start is None:
            self.start = n
        if n - (self.start + len(self.tokens)) > 1:  # a loop that does not observe: read all but the newest
            self.reads += 1
            self._known(context[self.start + len(self.tokens) : n - 1].tolist())
        steps = self.scanner.generated
        if (
            n - (self.start + len(self.tokens)) == 1
        ):  # the newest token is still being computed: a lazy lookup
            ends = self.ramp.step_ends(self.scanner)
            steps = steps + ends[mx.minimum(context[-1], ends.size - 1)].astype(mx.float32)
        temp = mx.minimum(self.t0 + self.dt * steps, self.tmax)
        self.applied[n - self.start] = temp
        return logits / temp

    def temperatures(self) -> dict[int, float]:
        """Temperature applied to the token at each position after the prompt."""
        mx.eval(list(self.applied.values()))
        return {k: v.item() for k, v in self.applied.items()}


def step_temperatures(
    tokenizer,
    tokens: list[int],
    processor: StepTemperatureProcessor,
    style: str = "cot",
    fmt=None,
    unit: str = "line",
) -> list[float]:
    """The temperature ``processor`` applied to each generated step of ``tokens`` (a
    continuation; steps as ``split_steps`` cuts it, execution outputs left out): at the
    step's first token, or for a block, the first token after its opening delimiter (a text
    step before a block is known to have ended only once that delimiter is complete)."""
    applied = processor.temperatures()
    steps = split_steps(tokenizer.decode(tokens), style, fmt, unit)
    token_starts = [len(tokenizer.decode(tokens[:j])) for j in range(len(tokens))]
    openers = tuple(op for _, op in fmt.openers()) if fmt is not None else ()
    temps, start = [], 0
    for text, kind in zip(steps.steps, steps.kinds):
        first = start + next((len(op) for op in openers if text.startswith(op)), 0)
        j = bisect.bisect_right(token_starts, first) - 1  # the token holding that character
        if kind != "execution" and j in applied:
            temps.append(applied[j])
        start += len(text)
    return temps


def stable_seed(*parts) -> int:
    """A 31-bit seed from ``parts`` that is the same in every process.

    Python's ``hash()`` of a string (or of a tuple holding one) changes with each process
    (PYTHONHASHSEED), which made step-control draws differ between identical runs."""
    return int.from_bytes(hashlib.sha256(repr(parts).encode()).digest()[:4], "little") % (2**31)


class SeededSampler:
    """Categorical sampling at ``temp`` from an explicit, split-per-call PRNG key."""

    def __init__(self, seed: int, temp: float = 1.0):
        self.key = mx.random.key(seed)
        self.temp = temp

    def __call__(self, logprobs: mx.array) -> mx.array:
        self.key, sub = mx.random.split(self.key)
        if self.temp == 0:
            return mx.argmax(logprobs, axis=-1)
        return mx.random.categorical(logprobs * (1.0 / self.temp), key=sub)
