"""Streaming generation over a dataset: bounded windows, continuous batching, per-item seeds.

``sample`` and ``step-control`` work through their units (problems, prefixes) with three
pieces from this module, so peak memory is set by the batch and lengths, never by the
dataset:

* ``stream_completions``: one long-lived mlx-lm ``BatchGenerator`` fed from a *pull*
  function. Whenever fewer than ``batch_size`` sequences are in flight it asks the caller
  for more requests, so the batch refills as sequences finish (continuous batching across
  problems, prefixes and rounds). Both formats: chain-of-thought, and the sandboxed code
  loop (a sequence leaves the batch with its KV cache while its code block runs, and a
  step-controlled prefix's kept code is replayed on a worker thread, not before the run).
  Each request carries its own logits processors (and may carry its own sampler).
* ``item_noise``: the PRNG stream of one draw, from (seed, problem, k, round / draw), applied
  per sequence (Gumbel-max) so a killed and resumed run draws exactly what an uninterrupted
  one does, whatever the batch holds.
* ``InOrder``: units finish out of order; their output lines are appended in input order
  (a reorder buffer), so the output files of a resumed run are byte-identical.

``release_memory`` returns freed buffers to the system (MLX's cache, and glibc's arenas via
``malloc_trim`` where there is glibc), called every so many retired units.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Callable, Iterator, Sequence

import mlx.core as mx

from mlx_scdpo.generation.ramp import stable_seed
from mlx_scdpo.sandbox.pool import SandboxPool

#: Retired units between two ``release_memory`` calls.
RELEASE_EVERY = 64


@dataclass
class Request:
    """One sequence to generate. ``tag`` is the caller's (returned with the completion)."""

    tag: object
    prompt: list[int]
    processors: list | None = None  # this sequence's logits processors (an ``ItemNoise`` last to sample)
    sampler: Callable | None = None  # None: greedy (argmax), batched
    cache: list | None = None  # prefilled KV cache of prompt[:-1] (``prefill_cache``); copied, never changed
    setup_code: list[str] = field(default_factory=list)  # code format: replayed in the sandbox first


@dataclass
class _Live:
    request: Request
    sandbox: object = None
    tokens: list[int] = field(default_factory=list)
    gen_mask: list[int] = field(default_factory=list)
    segment_start: int = 0  # first token after the last execution block
    executions: int = 0

    @property
    def generated(self) -> int:
        return sum(self.gen_mask)


class ItemNoise:
    """One draw's randomness as a logits processor: ``logits / temp`` plus Gumbel noise from its own key.

    With the batch's greedy sampler (argmax, one batched call) this is exactly categorical
    sampling at ``temp`` (the Gumbel-max trick), and what a sequence draws depends only on
    its own key, never on its batch mates. A per-sequence sampler (``BatchGenerator``'s
    ``samplers``) would do the same but costs one more sampler call per sequence per token;
    mlx-lm already visits each sequence for its processors, so the noise rides along.
    ``temp == 0`` is greedy. The key is split once per call, i.e. once per sampled token.
    """

    def __init__(self, seed: int, temp: float = 1.0):
        self.key = mx.random.key(seed)
        self.temp = temp

    def __call__(self, context, logits):
        if self.temp == 0:
            return logits
        self.key, sub = mx.random.split(self.key)
        if self.temp != 1.0:
            logits = logits * (1.0 / self.temp)
        return logits + mx.random.gumbel(logits.shape, key=sub)


def item_noise(temp: float, seed: int, *parts) -> ItemNoise:
    """The PRNG stream of one draw, from ``(seed, *parts)`` (problem, k, round / draw number)."""
    return ItemNoise(stable_seed(seed, *parts), temp)


def stream_completions(
    model,
    tokenizer,
    pull: Callable[[int], list[Request]],
    *,
    fmt=None,
    pool=None,
    max_tokens: int = 512,
    batch_size: int = 32,
    max_rounds: int = 8,
    stop_strings: Sequence[str] = (),
    stop_tokens: Sequence[int] | None = None,
    on_token: Callable[[int], None] | None = None,
) -> Iterator[tuple[object, object]]:
    """Yield ``(tag, completion)`` as sequences finish, refilling the batch from ``pull(n)``.

    ``pull(n)`` returns up to ``n`` new requests (it may return fewer, or none while the
    caller waits for completions); the stream ends when nothing is in flight and ``pull``
    gives nothing. ``fmt`` (a block format) runs the sandboxed code loop, with sandboxes
    from ``pool``; completions then carry ``gen_mask`` (1: generated, 0: execution output).
    ``stop_tokens`` replaces the tokenizer's EOS ids (``[]``: every sequence runs to ``max_tokens``).
    """
    # mlx-lm (heavy) only when a run generates; BatchGenerator looked up here, as tests patch it there
    from mlx_scdpo.generation.batched import (
        BatchGenerator,
        Completion,
        copy_cache,
        observe,
        stop_trigger_ids,
        trim_at_stop,
    )
    from mlx_scdpo.generation.code_loop import CodeCompletion, closed_code, hit_stop_string, inert_output

    stop_ids = tokenizer.eos_token_ids if stop_tokens is None else stop_tokens
    keep_heap_flat()
    gen = BatchGenerator(
        model,
        max_tokens=max_tokens,
        stop_tokens=[[t] for t in stop_ids] or None,
        completion_batch_size=batch_size,
        prefill_batch_size=min(batch_size, 8),
    )
    stop_strings = [s for s in stop_strings if s]
    stop_triggers = stop_trigger_ids(tokenizer, stop_strings) if stop_strings else None
    code_triggers = stop_trigger_ids(tokenizer, [fmt.code_close]) if fmt is not None else None
    live: dict[int, _Live] = {}  # BatchGenerator uid -> sequence
    waiting: dict = {}  # future -> (sequence, cache or None): setup code or a block running
    executor = ThreadPoolExecutor(max_workers=max(1, min(batch_size, 16))) if fmt is not None else None
    holding: dict[int, _Live] = {}  # sequences holding a sandbox (closed on the way out)

    def insert(s: _Live, tokens: list[int], cache, context: list[int], budget: int):
        req = s.request
        extra = {"caches": [cache], "all_tokens": [context]} if cache is not None else {}
        (uid,) = gen.insert(
            [tokens], [budget], samplers=[req.sampler], logits_processors=[req.processors], **extra
        )
        live[uid] = s

    def start(s: _Live):
        p = s.request.prompt
        if s.request.cache is not None:
            insert(s, p[-1:], copy_cache(s.request.cache), p[:-1], max_tokens)
            s.request.cache = None  # copied into the batch; the caller's prefix keeps (and frees) its own
        else:
            insert(s, p, None, [], max_tokens)

    def resume(s: _Live, cache, output: str):
        exec_tokens = tokenizer.encode(
            fmt.execution_block(inert_output(output, tokenizer, fmt)), add_special_tokens=False
        )
        context = s.request.prompt + s.tokens
        s.tokens += exec_tokens
        s.gen_mask += [0] * len(exec_tokens)
        observe(s.request.processors, exec_tokens)  # the ramp learns tokens from here, never reads them
        s.segment_start = len(s.tokens)
        insert(s, exec_tokens, cache, context, max(1, max_tokens - s.generated))

    def setup(s: _Live) -> None:
        for code in s.request.setup_code:
            s.sandbox.run(code)

    def finish(s: _Live, reason: str):
        if stop_strings:  # a stop string ends the sequence; no token overlapping it is kept
            kept, hit = trim_at_stop(tokenizer, s.tokens, stop_strings, start=s.segment_start)
            if hit:
                s.tokens, s.gen_mask, reason = kept, s.gen_mask[: len(kept)], "stop"
        text = tokenizer.decode(s.tokens)
        if fmt is None:
            return s.request.tag, Completion(0, s.tokens, text, reason)
        s.sandbox.close()
        del holding[id(s)]
        return s.request.tag, CodeCompletion(0, s.tokens, text, reason, s.executions, s.gen_mask)

    try:
        while True:
            room = batch_size - len(live) - len(waiting)
            for req in pull(room) if room > 0 else ():
                s = _Live(req)
                if fmt is None:
                    start(s)
                    continue
                s.sandbox = pool.sandbox()
                holding[id(s)] = s
                if req.setup_code:  # a prefix's kept code, replayed off the decoding thread
                    waiting[executor.submit(setup, s)] = (s, None)
                else:
                    start(s)
            if not live and not waiting:
                break
            ready = [f for f in waiting if f.done()]
            if not live and not ready:
                ready = list(wait(list(waiting), return_when=FIRST_COMPLETED).done)
            for f in ready:
                s, cache = waiting.pop(f)
                if cache is None:
                    start(s)
                else:
                    resume(s, cache, f.result().output)
            if not live:
                continue
            responses = gen.next_generated()
            if on_token:
                on_token(len(responses))
            stopped, submitted = [], []
            for r in responses:
                s = live[r.uid]
                if r.finish_reason != "stop":
                    s.tokens.append(r.token)
                    s.gen_mask.append(1)
                    observe(s.request.processors, [r.token])
                reason = r.finish_reason
                if reason is None and hit_stop_string(tokenizer, s, r.token, stop_strings, stop_triggers):
                    reason = "stop"  # looked for in the model's own text since the last execution block
                    stopped.append(r.uid)
                if reason is None and fmt is not None:
                    code = closed_code(tokenizer, fmt, s, r.token, code_triggers)
                    if code is not None and s.executions >= max_rounds:
                        reason = "max_rounds"
                        stopped.append(r.uid)
                    elif code is not None:
                        s.executions += 1
                        stopped.append(r.uid)
                        submitted.append((executor.submit(s.sandbox.run, code), s, r.uid))
                if reason is not None:
                    del live[r.uid]
                    yield finish(s, reason)
            if stopped:
                # A sequence running code leaves the batch with its KV cache and re-enters after.
                caches = gen.remove(stopped, return_prompt_caches=bool(submitted))
                for future, s, uid in submitted:
                    waiting[future] = (s, caches[uid][0])
                    del live[uid]
    finally:
        if executor is not None:
            executor.shutdown(wait=True)
        for s in holding.values():
            s.sandbox.close()
        gen.close()


def sandbox_pool(fmt, batch_size: int, timeout: float):
    """A ``SandboxPool`` for the code format (kept for the whole run), nothing for chain-of-thought."""
    if fmt is None:
        return nullcontext()

    return SandboxPool(size=min(batch_size, 8), timeout=timeout)


class InOrder:
    """Reorder buffer: units finish in any order, ``put(seq, value)``; ``pop_ready`` yields them in ``seq`` order."""

    def __init__(self, start: int = 0):
        self.next = start
        self.buffer: dict[int, object] = {}

    def put(self, seq: int, value) -> None:
        self.buffer[seq] = value

    def pop_ready(self) -> Iterator:
        while self.next in self.buffer:
            value = self.buffer.pop(self.next)
            self.next += 1
            yield value

    def __len__(self) -> int:
        return len(self.buffer)


_libc = None


def _glibc():
    """glibc through ctypes, or None (not Linux, another C library)."""
    global _libc
    if _libc is None:
        _libc = False
        if sys.platform.startswith("linux"):
            name = ctypes.util.find_library("c")
            try:
                lib = ctypes.CDLL(name) if name else None
            except OSError:
                lib = None
            if lib is not None and hasattr(lib, "malloc_trim") and hasattr(lib, "mallopt"):
                _libc = lib
    return _libc or None


def keep_heap_flat() -> None:
    """Serve large blocks (MLX's host buffers) from ``mmap`` so a freed one returns to the system.

    glibc raises its mmap threshold each time a large mmapped block is freed (up to 32 MB),
    after which such blocks come from the heap, where freed ones stay resident and fragment:
    resident memory then crept with the number of units processed. A fixed threshold
    (``mallopt(M_MMAP_THRESHOLD)``) keeps it set by the batch. Linux/glibc only; else nothing.
    """
    lib = _glibc()
    if lib is not None:
        lib.mallopt(-3, 1 << 18)  # M_MMAP_THRESHOLD: 256 KiB


def release_memory() -> None:
    """Give freed memory back: MLX's buffer cache, and glibc's free lists (``malloc_trim``, Linux only)."""
    mx.clear_cache()
    lib = _glibc()
    if lib is not None:
        lib.malloc_trim(0)
