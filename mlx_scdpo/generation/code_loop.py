"""Generate -> execute -> continue for code-integrated solutions, on ``BatchGenerator``.

Each solution owns a stateful ``Sandbox``. When a sequence closes a code block it leaves
the batch, its code runs on a thread (sandboxes are separate processes), and the
execution block's tokens are inserted back with the sequence's own KV cache, so
nothing is recomputed. Two schedules:

* ``continuous`` (default): a sequence re-enters as soon as its execution finishes while
  the others keep generating;
* ``rounds``: the batch runs until every sequence has stopped, executes all pending
  blocks, and resumes (what a simple driver does).

``scripts/bench/code_loop.py`` measures the two. Caps: ``max_rounds`` executions and
``max_tokens`` model-generated tokens per solution. Token ids are kept as generated;
``gen_mask`` marks which ids the model produced (1) and which came from executions (0).
Text stop strings end a solution as in ``mlx_scdpo.generation.batched`` (looked for in the model's
own text since the last execution block, never in execution outputs).
"""

from __future__ import annotations

from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Callable, Iterator, Sequence

from mlx_lm.generate import BatchGenerator

from eval.blocks import MARKDOWN, BlockFormat, pending_code
from mlx_scdpo.generation.batched import _TAIL_TOKENS, _stop_position, observe, stop_trigger_ids, trim_at_stop
from mlx_scdpo.sandbox.pool import SandboxPool


@dataclass
class CodeCompletion:
    index: int
    tokens: list[int]
    text: str
    finish_reason: str  # "stop" (EOS or a stop string), "length", "max_rounds"
    executions: int
    gen_mask: list[int] = field(default_factory=list)


@dataclass
class _Solution:
    index: int
    prompt: list[int]
    sandbox: object
    tokens: list[int] = field(default_factory=list)
    gen_mask: list[int] = field(default_factory=list)
    segment_start: int = 0  # first token after the last execution block
    executions: int = 0

    @property
    def generated(self) -> int:
        return sum(self.gen_mask)


#: Inserted after the first character of a delimiter or special token found in program output.
ZERO_WIDTH_SPACE = "\u200b"


def inert_output(output: str, tokenizer, fmt: BlockFormat) -> str:
    """Program output that stays text in token space and in the solution's blocks.

    Tokenizers turn the text of a special token (``<|im_end|>``, the EOS text) into that
    control token, and a printed block delimiter (a line of ``` in the markdown format,
    ``<|endofblock|>`` in MathCoder's) would close the execution block early and let the
    program write a fake code block or final answer into the solution. Each is broken by a
    zero-width space after its first character; other output is unchanged.
    """
    marks = {
        getattr(t, "content", t) for t in (getattr(tokenizer, "added_tokens_decoder", None) or {}).values()
    }
    marks |= set(getattr(tokenizer, "all_special_tokens", None) or ())
    marks |= {
        d.strip()
        for d in (fmt.code_open, fmt.code_close, fmt.exec_open, fmt.exec_close, fmt.text_open, fmt.text_close)
    }
    # Whitespace-only added tokens (some tokenizers have runs of spaces) are text already.
    marks = sorted(
        (m for m in marks if isinstance(m, str) and len(m) > 1 and m.strip()), key=len, reverse=True
    )
    for _ in range(8):  # a replacement never creates a longer mark; a few passes settle overlaps
        before = output
        for m in marks:
            if m in output:
                output = output.replace(m, m[0] + ZERO_WIDTH_SPACE + m[1:])
        if output == before:
            break
    return output


def hit_stop_string(
    tokenizer, seq, token: int, stop_strings: Sequence[str], triggers: set[int] | None
) -> bool:
    """Whether ``seq``'s own text since its last execution block (``seq.segment_start``) now holds a
    stop string; decoded only when ``token`` can complete one (``triggers``; None: any token can)."""
    if not stop_strings or triggers is not None and token not in triggers:
        return False
    tail = tokenizer.decode(seq.tokens[max(seq.segment_start, len(seq.tokens) - _TAIL_TOKENS) :])
    return _stop_position(tail, stop_strings) >= 0


def closed_code(tokenizer, fmt: BlockFormat, seq, token: int, triggers: set[int] | None) -> str | None:
    """The code of the block ``token`` just closed in ``seq`` (``eval.blocks.pending_code``), else None;
    decoded only when ``token`` can close a block (``triggers``; None: any token can)."""
    if triggers is not None and token not in triggers:
        return None
    return pending_code(tokenizer.decode(seq.tokens[seq.segment_start :]), fmt)


def generate_with_code(
    model,
    tokenizer,
    prompts: Sequence[Sequence[int]],
    pool: SandboxPool,
    *,
    fmt: BlockFormat = MARKDOWN,
    max_tokens: int = 1024,
    max_rounds: int = 8,
    batch_size: int = 32,
    sampler: Callable | None = None,
    logits_processors: Callable[[int], list] | None = None,
    schedule: str = "continuous",
    on_token: Callable[[int], None] | None = None,
    setup_code: Callable[[int], list[str]] | None = None,
    stop_strings: Sequence[str] = (),
) -> Iterator[CodeCompletion]:
    """Yield a ``CodeCompletion`` per prompt as it finishes (see module docstring).

    ``logits_processors(i)`` may give per-prompt processors (e.g. a temperature ramp).
    ``setup_code(i)`` lists code blocks replayed in prompt i's sandbox before generation
    (a step-controlled prefix's state is rebuilt this way).
    """
    if schedule not in ("continuous", "rounds"):
        raise ValueError(f"unknown schedule {schedule!r}")
    loop = _CodeLoop(
        model,
        tokenizer,
        prompts,
        pool,
        fmt,
        max_tokens,
        max_rounds,
        batch_size,
        sampler,
        logits_processors,
        setup_code,
        stop_strings,
    )
    try:
        while loop.by_uid or loop.pending:
            for f in loop.executed(wait_for_batch=schedule == "rounds"):
                s, cache = loop.pending.pop(f)
                loop.resume(s, cache, f.result().output)
            if loop.by_uid:
                yield from loop.step(on_token)
    finally:
        loop.close()


class _CodeLoop:
    """One ``generate_with_code`` call: the batch, its solutions by uid, and the executions in flight."""

    def __init__(
        self,
        model,
        tokenizer,
        prompts,
        pool: SandboxPool,
        fmt: BlockFormat,
        max_tokens: int,
        max_rounds: int,
        batch_size: int,
        sampler,
        logits_processors,
        setup_code,
        stop_strings,
    ):
        self.tokenizer, self.fmt, self.max_tokens, self.max_rounds = tokenizer, fmt, max_tokens, max_rounds
        self.gen = BatchGenerator(
            model,
            max_tokens=max_tokens,
            stop_tokens=[[t] for t in tokenizer.eos_token_ids],
            sampler=sampler,
            completion_batch_size=batch_size,
            prefill_batch_size=min(batch_size, 8),
        )
        self.triggers = stop_trigger_ids(tokenizer, [fmt.code_close])  # a code block can only close on these
        self.stop_strings = [s for s in stop_strings if s]
        self.stop_triggers = stop_trigger_ids(tokenizer, self.stop_strings) if self.stop_strings else None
        self.sols = [_Solution(i, list(p), pool.sandbox()) for i, p in enumerate(prompts)]
        self.pending = {}  # future -> (solution, cache)
        self.executor = ThreadPoolExecutor(max_workers=max(1, min(batch_size, 16)))
        if setup_code is not None:
            for s in self.sols:
                for code in setup_code(s.index):
                    s.sandbox.run(code)
        self.with_procs = logits_processors is not None
        self.procs = [logits_processors(i) if logits_processors else None for i in range(len(self.sols))]
        self.by_uid: dict[int, _Solution] = {}
        uids = self.gen.insert(
            [s.prompt for s in self.sols],
            [max_tokens] * len(self.sols),
            logits_processors=self.procs if logits_processors else None,
        )
        for uid, s in zip(uids, self.sols):
            self.by_uid[uid] = s

    def executed(self, wait_for_batch: bool) -> list:
        """Executions to resume now: those done (none while the batch runs, in ``rounds``), or, when
        nothing is generating, the next one to finish."""
        ready = [] if wait_for_batch and self.by_uid else [f for f in self.pending if f.done()]
        if not self.by_uid and not ready and self.pending:
            ready = list(wait(list(self.pending), return_when=FIRST_COMPLETED).done)
        return ready

    def finish(self, s: _Solution, reason: str) -> CodeCompletion:
        tokenizer = self.tokenizer
        if self.stop_strings:  # a stop string ends the solution; its tokens are not kept
            kept, hit = trim_at_stop(tokenizer, s.tokens, self.stop_strings, start=s.segment_start)
            if hit:
                s.tokens, s.gen_mask, reason = kept, s.gen_mask[: len(kept)], "stop"
        s.sandbox.close()
        return CodeCompletion(s.index, s.tokens, tokenizer.decode(s.tokens), reason, s.executions, s.gen_mask)

    def resume(self, s: _Solution, cache, output: str) -> None:
        """Append the execution block and put the solution back in the batch with its own KV cache."""
        exec_tokens = self.tokenizer.encode(
            self.fmt.execution_block(inert_output(output, self.tokenizer, self.fmt)), add_special_tokens=False
        )
        s.tokens += exec_tokens
        s.gen_mask += [0] * len(exec_tokens)
        observe(self.procs[s.index], exec_tokens)
        s.segment_start = len(s.tokens)
        (uid,) = self.gen.insert(
            [exec_tokens],
            [max(1, self.max_tokens - s.generated)],
            caches=[cache],
            all_tokens=[s.prompt + s.tokens[: -len(exec_tokens)]],
            logits_processors=[self.procs[s.index]] if self.with_procs else None,
        )
        self.by_uid[uid] = s

    def step(self, on_token) -> Iterator[CodeCompletion]:
        """One token for every sequence in the batch; yields the solutions that ended, and sends closed
        code blocks to their sandboxes."""
        responses = self.gen.next_generated()
        if on_token:
            on_token(len(responses))
        stopped, submitted = [], []
        for r in responses:
            s = self.by_uid[r.uid]
            if r.finish_reason != "stop":
                s.tokens.append(r.token)
                s.gen_mask.append(1)
                observe(self.procs[s.index], [r.token])
            if r.finish_reason is not None:
                del self.by_uid[r.uid]
                yield self.finish(s, r.finish_reason)
                continue
            if hit_stop_string(self.tokenizer, s, r.token, self.stop_strings, self.stop_triggers):
                stopped.append(r.uid)
                del self.by_uid[r.uid]
                yield self.finish(s, "stop")
                continue
            code = closed_code(self.tokenizer, self.fmt, s, r.token, self.triggers)
            if code is None:
                continue
            if s.executions >= self.max_rounds:
                stopped.append(r.uid)
                del self.by_uid[r.uid]
                yield self.finish(s, "max_rounds")
                continue
            s.executions += 1
            stopped.append(r.uid)
            submitted.append((self.executor.submit(s.sandbox.run, code), s, r.uid))
        if stopped:
            # The sequence leaves the batch with its KV cache; it re-enters after execution.
            caches = self.gen.remove(stopped, return_prompt_caches=True)
            for future, s, uid in submitted:
                self.pending[future] = (s, caches[uid][0])
                del self.by_uid[uid]

    def close(self) -> None:
        self.executor.shutdown(wait=True)
        for s in self.sols:
            s.sandbox.close()
        self.gen.close()
