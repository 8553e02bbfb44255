"""Peak memory of `mlx-scdpo eval` and `mlx-scdpo step-control` at real lengths (issue 12).

    python scripts/bench/generation_memory.py [--runs eval,step-control] [--max-tokens 512] [--work-dir /tmp/scdpo-mem]

The model is `memory.py`'s random model of Qwen2.5-0.5B's shape (vocabulary 151,936, float32; its
BPE tokenizer has 1,024 tokens: the model's ids above it decode to nothing, which costs no memory).
Eight GSM8K-style problems whose prompts encode to about 512 tokens (the question padded with
words; measured with the tokenizer through `build_prompt_tokens`), batch 8, greedy `eval`
decoding up to ``--max-tokens`` (a random model rarely emits EOS, so it runs to the limit); for
`step-control`, a `solutions.jsonl` as `sample` writes it with one correct ~512-token solution
per problem (eight step lines ending in \\boxed{gold}), one prefix per solution and one round,
so the 8 continuations are one batch of 8. Each run is one subprocess; its peak RSS is the
kernel's figure (``wait4``: bytes on macOS, KiB on Linux), MLX's buffer cache included.
"""

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from memory import QWEN05, make_model  # noqa: E402

WORD = " apples"  # padding that the small BPE tokenizer encodes in few tokens


def _tokenizer(model: Path):
    from mlx_lm.tokenizer_utils import load as load_tokenizer

    return load_tokenizer(model)


def padded_question(tokenizer, i: int, target: int) -> tuple[str, int]:
    """A GSM8K-style question whose 0-shot base prompt is the closest to ``target`` tokens from below."""
    from mlx_scdpo.prompts import build_prompt_tokens

    head = f"Problem {i}: Tom has {i + 3} boxes of 12 apples each and gives away 5 apples. Notes:"
    tail = " How many apples does he have left?"
    lo, hi = 0, 4 * target
    while lo < hi:  # the most padding words that keep the prompt within target
        mid = (lo + hi + 1) // 2
        n = len(build_prompt_tokens(tokenizer, "gsm8k", head + WORD * mid + tail, 0, False)[0])
        lo, hi = (mid, hi) if n <= target else (lo, mid - 1)
    q = head + WORD * lo + tail
    return q, len(build_prompt_tokens(tokenizer, "gsm8k", q, 0, False)[0])


def write_problems(path: Path, tokenizer, n: int, prompt_len: int) -> list[int]:
    rows, lens = [], []
    for i in range(n):
        q, k = padded_question(tokenizer, i, prompt_len)
        rows.append({"question": q, "answer": f"Some steps.\n#### {12 * (i + 3) - 5}"})
        lens.append(k)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return lens


def write_solutions(path: Path, tokenizer, n: int, prompt_len: int, solution_len: int, eos: int) -> list[int]:
    """``solutions.jsonl`` as `sample` writes it (``mlx_scdpo/method/sampling.py``): one correct sample a problem."""
    from mlx_scdpo.prompts import build_prompt_tokens, stop_strings

    rows, lens = [], []
    for i in range(n):
        q, _ = padded_question(tokenizer, i, prompt_len)
        ids, prompt = build_prompt_tokens(tokenizer, "gsm8k", q, 0, False)
        gold = str(12 * (i + 3) - 5)
        steps = 8
        lo, hi = 0, solution_len
        while lo < hi:  # the most padding a step that keeps the solution within solution_len
            mid = (lo + hi + 1) // 2
            text = _solution(mid, steps, gold)
            lo, hi = (
                (mid, hi)
                if len(tokenizer.encode(text, add_special_tokens=False)) + 1 <= solution_len
                else (lo, mid - 1)
            )
        text = _solution(lo, steps, gold)
        sol_ids = tokenizer.encode(text, add_special_tokens=False) + [eos]
        lens.append(len(sol_ids))
        rows.append(
            {
                "problem_id": f"gsm8k-{i}",
                "task": "gsm8k",
                "question": q,
                "gold": gold,
                "prompt": prompt,
                "prompt_ids": ids,
                "n_sampled": 1,
                "seed": 0,
                "solution_format": "cot",
                "block_format": None,
                "stop": list(stop_strings()),
                "samples": [
                    {
                        "text": text,
                        "ids": sol_ids,
                        "extracted": gold,
                        "correct": True,
                        "finish_reason": "stop",
                    }
                ],
            }
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return lens


def _solution(pad: int, steps: int, gold: str) -> str:
    lines = [f"Step {s + 1}: we count the apples{WORD * (pad // steps)}." for s in range(steps - 1)]
    return "\n".join(lines + [f"So the answer is \\boxed{{{gold}}}."])


def run(cmd: list[str], log: Path, timeout: float) -> dict:
    """One subprocess: exit code, peak RSS (GB, from its own ``wait4``), wall time, the end of its output."""
    import subprocess
    import threading

    t0 = time.time()
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT)
    timer = threading.Timer(timeout, proc.kill)  # nothing hangs
    timer.start()
    _, status, usage = os.wait4(proc.pid, 0)
    timer.cancel()
    rss = usage.ru_maxrss * (1 if sys.platform == "darwin" else 1024)
    return {
        "command": " ".join(cmd),
        "exit": os.waitstatus_to_exitcode(status),
        "peak_rss_gb": rss / 1e9,
        "wall_s": time.time() - t0,
        "output_tail": log.read_text()[-1500:],
    }


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--runs", default="eval,step-control", help="comma-separated: eval, step-control")
    p.add_argument("--prompt-len", type=int, default=512)
    p.add_argument("--max-tokens", type=int, default=512)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--work-dir", default="/tmp/scdpo-mem")
    p.add_argument(
        "--model", default=None, help="an existing model folder (default: WORK_DIR/model, made once)"
    )
    p.add_argument("--timeout", type=float, default=900)
    p.add_argument("--out", default="scripts/bench/generation_memory_results.json")
    a = p.parse_args()
    work = Path(a.work_dir)
    model = Path(a.model) if a.model else make_model(work / "model")
    eos = json.loads((model / "config.json").read_text())["eos_token_id"]
    tok = _tokenizer(model)
    out_path = Path(a.out)
    results = json.loads(out_path.read_text()).get("runs", {}) if out_path.is_file() else {}
    cli = [sys.executable, "-m", "mlx_scdpo.cli"]
    for name in a.runs.split(","):
        import shutil

        out_dir = work / f"{name}-out"
        shutil.rmtree(out_dir, ignore_errors=True)
        if name == "eval":
            data = work / "problems" / "test.jsonl"
            lens = write_problems(data, tok, a.batch_size, a.prompt_len)
            cmd = [
                *cli,
                "eval",
                "--model",
                str(model),
                "--task",
                "gsm8k",
                "--data-files",
                str(data),
                "--max-tokens",
                str(a.max_tokens),
                "--batch-size",
                str(a.batch_size),
                "--no-chat-template",
                "--num-shots",
                "0",
                "--output-dir",
                str(out_dir),
            ]
            extra = {"prompt_tokens": lens}
        elif name == "step-control":
            sols = work / "solutions" / "solutions.jsonl"
            lens = write_solutions(sols, tok, a.batch_size, a.prompt_len, 512, eos)
            cmd = [
                *cli,
                "step-control",
                "--model",
                str(model),
                "--solutions",
                str(sols),
                "--output-dir",
                str(out_dir),
                "--batch-size",
                str(a.batch_size),
                "--max-tokens",
                str(a.max_tokens),
                "--rounds",
                "1",
                "--prefixes-per-solution",
                "1",
                "--no-progress",
            ]
            extra = {"solution_tokens": lens}
        else:
            raise SystemExit(f"unknown run {name!r} (eval, step-control)")
        r = {
            **run(cmd, work / f"{name}.log", a.timeout),
            **extra,
            "max_tokens": a.max_tokens,
            "batch_size": a.batch_size,
        }
        results[name] = r
        print(
            f"{name}: peak RSS {r['peak_rss_gb']:.2f} GB, exit {r['exit']}, {r['wall_s']:.0f} s", flush=True
        )
        out_path.parent.mkdir(parents=True, exist_ok=True)
        out_path.write_text(
            json.dumps({"prompt_len": a.prompt_len, "model": QWEN05, "runs": results}, indent=2)
        )
    print(f"{'run':<14} {'batch':>5} {'max tokens':>10} {'peak RSS GB':>11} {'wall s':>7}")
    for name, r in results.items():
        print(
            f"{name:<14} {r['batch_size']:>5} {r['max_tokens']:>10} {r['peak_rss_gb']:>11.2f} {r['wall_s']:>7.0f}"
        )


if __name__ == "__main__":
    main()
