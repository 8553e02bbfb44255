"""Batched generation on top of mlx-lm's ``BatchGenerator`` with text stop strings.

``BatchGenerator`` does continuous batching over token ids and stops on token
sequences; benchmarks also need *text* stop strings (``\\n\\nQuestion:``) whose
tokenization depends on context, so each finished token's tail is decoded and checked.
A sequence that writes a stop string ends with ``finish_reason`` "stop" (as on EOS), and
neither its ids nor its text keep any token that overlaps the stop string: the ids stop at
the last token that ends before it (``trim_at_stop``), and the text is their decoding.
Finished sequences are yielded as soon as they end, so callers can append results
incrementally (resumable runs). ``solution_stream`` picks plain batched generation or the
sandboxed code loop (``mlx_scdpo.generation.code_loop``) by solution format.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Iterator, Sequence

import mlx.core as mx
from mlx_lm.generate import BatchGenerator
from mlx_lm.models.cache import make_prompt_cache

# Tokens decoded to look for a stop string; stop strings are much shorter than this.
_TAIL_TOKENS = 24


@dataclass
class Completion:
    index: int
    tokens: list[int]
    text: str
    finish_reason: str  # "stop" (EOS or a stop string) or "length"
    extra: dict = field(default_factory=dict)


def _stop_position(text: str, stop_strings: Sequence[str]) -> int:
    """Where the first stop string starts in ``text`` (-1: none)."""
    return min((i for i in (text.find(s) for s in stop_strings if s) if i >= 0), default=-1)


def trim_at_stop(
    tokenizer, tokens: list[int], stop_strings: Sequence[str], start: int = 0
) -> tuple[list[int], bool]:
    """``tokens`` cut before the first stop string in the decoding of ``tokens[start:]``.

    Keeps the longest run of tokens whose decoding ends at or before the stop string, so
    a token that holds the stop string's first characters (``".\\n\\n"``) goes too. Returns
    (tokens, whether a stop string was found)."""
    text = tokenizer.decode(tokens[start:])
    cut = _stop_position(text, stop_strings)
    if cut < 0:
        return tokens, False
    t = len(tokens)
    while t > start:  # the stop string was just completed: only a few tokens to drop
        head = tokenizer.decode(tokens[start:t])
        if len(head) <= cut and text.startswith(head):
            break
        t -= 1
    return tokens[:t], True


def prefill_cache(model, tokens: Sequence[int]) -> list:
    """KV cache of ``tokens[:-1]`` (the last token is fed when generation starts)."""
    cache = make_prompt_cache(model)
    if len(tokens) > 1:
        model(mx.array(tokens[:-1])[None], cache=cache)
        mx.eval([c.state for c in cache])
    return cache


def copy_cache(cache: list) -> list:
    """A fresh cache object per layer with the same contents (MLX arrays are immutable)."""
    out = []
    for c in cache:
        new = type(c).__new__(type(c))
        new.__dict__.update(c.__dict__)
        if getattr(c, "keys", None) is not None:
            new.state = c.state
        out.append(new)
    return out


def stop_trigger_ids(tokenizer, stop_strings: Sequence[str]) -> set[int] | None:
    """Token ids whose vocabulary string holds the last character of a stop string.

    A stop string can only complete on such a token, so the (costly) tail decode runs
    only then. ASCII characters are spelled as themselves in byte-level BPE and
    SentencePiece vocabularies alike. None means "check every token".
    """
    last_chars = {s[-1] for s in stop_strings if s}
    if not last_chars or not all(c.isascii() and c.isprintable() and c != " " for c in last_chars):
        return None
    try:
        vocab = tokenizer.get_vocab()
    except Exception:
        return None
    return {i for tok, i in vocab.items() if any(c in tok for c in last_chars)}


def observe(processors, tokens: list[int]) -> None:
    """Pass a sequence's newly known tokens to its processors that follow them (``observe``)."""
    for p in processors or ():
        if hasattr(p, "observe"):
            p.observe(tokens)


def generate_batched(
    model,
    tokenizer,
    prompts: Sequence[Sequence[int]],
    *,
    max_tokens: int = 512,
    batch_size: int = 32,
    sampler: Callable | None = None,
    logits_processors: list | None = None,
    stop_strings: Sequence[str] = (),
    on_token: Callable[[int], None] | None = None,
    caches: Sequence | None = None,
    stop_tokens: Sequence[int] | None = None,
) -> Iterator[Completion]:
    """Yield a ``Completion`` for each prompt (in finishing order); greedy unless ``sampler``.

    ``logits_processors``: one list of processors per prompt (or None). ``caches``: per
    prompt, a prefilled KV cache of all but the prompt's last token (``prefill_cache``),
    copied before use so one cache serves any number of continuations.
    ``on_token`` is called with the number of tokens generated in each step (progress).
    ``stop_tokens`` replaces the tokenizer's EOS ids (``[]``: run to ``max_tokens``).
    """
    stop_ids = tokenizer.eos_token_ids if stop_tokens is None else stop_tokens
    gen = BatchGenerator(
        model,
        max_tokens=max_tokens,
        stop_tokens=[[t] for t in stop_ids] or None,
        sampler=sampler,
        completion_batch_size=batch_size,
        prefill_batch_size=min(batch_size, 8),
    )
    try:
        inputs = [list(p) for p in prompts]
        extra = {}
        if caches is not None:
            extra["caches"] = [copy_cache(c) for c in caches]
            extra["all_tokens"] = [p[:-1] for p in inputs]
            inputs = [p[-1:] for p in inputs]
        if logits_processors is not None:
            extra["logits_processors"] = list(logits_processors)
        uids = gen.insert(inputs, [max_tokens] * len(prompts), **extra)
        index_of = {uid: i for i, uid in enumerate(uids)}
        tokens: dict[int, list[int]] = {uid: [] for uid in uids}
        triggers = stop_trigger_ids(tokenizer, stop_strings) if stop_strings else None
        while responses := gen.next_generated():
            if on_token:
                on_token(len(responses))
            stopped = []
            for r in responses:
                toks = tokens[r.uid]
                if r.finish_reason != "stop":
                    toks.append(r.token)
                    if logits_processors is not None:
                        observe(logits_processors[index_of[r.uid]], [r.token])
                reason = r.finish_reason
                if stop_strings and reason is None and (triggers is None or r.token in triggers):
                    if _stop_position(tokenizer.decode(toks[-_TAIL_TOKENS:]), stop_strings) >= 0:
                        reason = "stop"
                        stopped.append(r.uid)
                if reason is not None:
                    toks, hit = trim_at_stop(tokenizer, tokens.pop(r.uid), stop_strings)
                    yield Completion(index_of[r.uid], toks, tokenizer.decode(toks), "stop" if hit else reason)
            if stopped:
                gen.remove(stopped)
    finally:
        gen.close()


@contextmanager
def solution_stream(
    model,
    tokenizer,
    prompts,
    *,
    fmt,
    sampler,
    max_tokens,
    batch_size,
    max_rounds=8,
    timeout=6.0,
    logits_processors=None,
    caches=None,
    setup_code=None,
    stop_strings=(),
    schedule="continuous",
    on_token=None,
):
    """Completions of ``prompts``: plain batched generation, or the sandboxed code loop when ``fmt``.

    Yields an iterator of objects with ``index``, ``tokens``, ``text``, ``finish_reason``
    (and ``gen_mask`` for code-integrated solutions).
    """
    if fmt is None:
        yield generate_batched(
            model,
            tokenizer,
            prompts,
            max_tokens=max_tokens,
            batch_size=batch_size,
            sampler=sampler,
            caches=caches,
            stop_strings=stop_strings,
            on_token=on_token,
            logits_processors=[logits_processors(i) for i in range(len(prompts))]
            if logits_processors
            else None,
        )
        return
    from mlx_scdpo.generation.code_loop import SandboxPool, generate_with_code  # it imports this module

    with SandboxPool(size=min(batch_size, 8), timeout=timeout) as pool:
        yield generate_with_code(
            model,
            tokenizer,
            prompts,
            pool,
            fmt=fmt,
            max_tokens=max_tokens,
            max_rounds=max_rounds,
            batch_size=batch_size,
            sampler=sampler,
            logits_processors=logits_processors,
            setup_code=setup_code,
            schedule=schedule,
            on_token=on_token,
            stop_strings=stop_strings,
        )
