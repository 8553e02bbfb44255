"""Fast greedy evaluation in the toy world, with step-level scores.

The toy generator knows every step, so besides final-answer accuracy this reports the
share of solutions whose every step is right and where the first wrong step falls.
Decoding is plain batched greedy search over prompts of equal length (toy prompts come
in a handful of lengths), so no padding or masking is needed: it yields the same tokens as
``generate_batched`` (tested), faster (``scripts/bench/toy_eval.py``), which keeps 4,000-problem test
sets affordable. The final answer is graded exactly as ``eval`` grades it.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from pathlib import Path

import mlx.core as mx
import numpy as np
from mlx_lm.models.cache import make_prompt_cache

from eval import is_equivalent
from eval.extract import extract_answer
from mlx_scdpo.jsonl import write_text_atomic
from mlx_scdpo.toy.world import ToyProblem, first_wrong_step


def toy_prompt_ids(tokenizer, question: str) -> list[int]:
    """The prompt ``eval`` and ``sample`` give the toy model (its chat template)."""
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": question}], add_generation_prompt=True, tokenize=False
    )
    return tokenizer.encode(text, add_special_tokens=False)


def greedy_texts(
    model, tokenizer, prompts: list[list[int]], max_tokens: int, batch_size: int = 512
) -> list[str]:
    """Greedy completions (text before EOS) of token-id prompts, batched by prompt length."""
    eos = set(tokenizer.eos_token_ids)
    by_length = defaultdict(list)
    for i, p in enumerate(prompts):
        by_length[len(p)].append(i)
    texts = [""] * len(prompts)
    for idx in by_length.values():
        for start in range(0, len(idx), batch_size):
            chunk = idx[start : start + batch_size]
            cache = make_prompt_cache(model)
            logits = model(mx.array([prompts[i] for i in chunk]), cache=cache)[:, -1]
            finished = mx.zeros((len(chunk),), dtype=mx.bool_)
            steps = []
            for t in range(max_tokens):
                token = mx.argmax(logits, axis=-1)
                steps.append(token)
                for e in eos:
                    finished = finished | (token == e)
                if t % 8 == 7:  # a sync every few tokens: stop once every row has finished
                    mx.eval(finished)
                    if finished.all().item():
                        break
                logits = model(token[:, None], cache=cache)[:, -1]
            for i, row in zip(chunk, mx.stack(steps, axis=1).tolist()):
                end = next((j for j, tok in enumerate(row) if tok in eos), len(row))
                texts[i] = tokenizer.decode(row[:end])
    return texts


def score_toy(problem: ToyProblem, text: str) -> dict:
    """Final-answer correctness (as ``eval`` grades it), whether every step is right, first wrong step."""
    wrong = first_wrong_step(problem, text)
    return {
        "question": problem.question,
        "steps": len(problem.ops) + 1,
        "correct": bool(is_equivalent(extract_answer(text, "gsm8k"), str(problem.answer), "gsm8k")),
        "all_steps_right": wrong is None,
        "first_wrong_step": wrong,
    }


def summarize(rows: list[dict]) -> dict:
    """Accuracy, all-steps-right share, and the distribution of the first wrong step (1-based)."""
    n = len(rows)
    wrong = [r["first_wrong_step"] for r in rows if r["first_wrong_step"] is not None]
    return {
        "n": n,
        "accuracy": sum(r["correct"] for r in rows) / n,
        "all_steps_right": sum(r["all_steps_right"] for r in rows) / n,
        "first_wrong_step": dict(sorted(Counter(wrong).items())),
        "mean_first_wrong_step": sum(wrong) / len(wrong) if wrong else None,
    }


def evaluate_toy(
    model, tokenizer, problems: list[ToyProblem], out_path: str | Path | None = None, batch_size: int = 512
) -> dict:
    """Greedy solutions of ``problems``: the summary, and one row per problem in ``out_path`` (JSONL)."""
    max_tokens = 24 * max(len(p.ops) + 1 for p in problems) + 40  # a step line is <= 22 characters
    texts = greedy_texts(
        model, tokenizer, [toy_prompt_ids(tokenizer, p.question) for p in problems], max_tokens, batch_size
    )
    rows = [score_toy(p, t) | {"text": t} for p, t in zip(problems, texts)]
    if out_path is not None:
        Path(out_path).parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(out_path, "".join(json.dumps(r) + "\n" for r in rows))  # whole or absent
    return summarize(rows) | {"rows": rows}


def step_control_error_positions(pairs_file: str | Path) -> dict:
    """Where step-controlled negatives first go wrong relative to their kept prefix of k steps.

    A negative "starts erring after step k" exactly when its first wrong step is k+1;
    "later" means it repeated correct steps first. Shares of all step-controlled pairs.
    """
    from mlx_scdpo.jsonl import read_finished
    from mlx_scdpo.toy.world import parse_question

    where, ks = Counter(), Counter()
    for row in read_finished(Path(pairs_file), None):
        problem = parse_question(row["question"])
        step = first_wrong_step(problem, row["prefix"] + row["rejected"]) if problem else None
        ks[row["k"]] += 1
        where[
            "none"
            if step is None
            else "k+1"
            if step == row["k"] + 1
            else "later"
            if step > row["k"] + 1
            else "in prefix"
        ] += 1
    n = sum(where.values())
    return {"pairs": n, **{k: v / max(n, 1) for k, v in where.items()}, "k": dict(sorted(ks.items()))}


#: Two-sided 95% quantiles of Student's t for 1..9 degrees of freedom (scipy.stats.t.ppf(0.975, df)).
T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}


def mean_with_interval(values) -> tuple[float, float]:
    """Mean of a (seeds, problems) array of per-problem scores and the half-width of a 95% interval.

    Two sources of noise add up: the seeds (Student's t with S-1 degrees of freedom on the
    per-seed means) and the finite test set (normal, on per-problem means over seeds):
    ``sqrt((t * sd_seed / sqrt(S))**2 + (1.96 * sd_problem / sqrt(P))**2)``. Both parts hold
    some of the seed-by-problem interaction, so the interval errs on the wide side. On a
    difference array (method A minus method B, same seeds and problems) it is a paired interval.
    """
    values = np.asarray(values, dtype=float)
    seeds, problems = values.shape
    seed_part = T975.get(seeds - 1, 1.96) * values.mean(axis=1).std(ddof=1) / seeds**0.5 if seeds > 1 else 0.0
    problem_part = 1.96 * values.mean(axis=0).std(ddof=1) / problems**0.5 if problems > 1 else 0.0
    return float(values.mean()), float((seed_part**2 + problem_part**2) ** 0.5)
