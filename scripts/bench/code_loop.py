"""Code-loop schedules side by side: continuous (resume each solution when its block ran)
vs rounds (run the batch until all stop, execute, resume).

    python scripts/bench/code_loop.py [--solutions 32] [--size 5m]

Solutions are scripted (a logits processor forces each token) so both schedules do
exactly the same model work and the same code: 3 code blocks per solution, each sleeping
20-300 ms (as real code takes varying time), with 20-120 tokens of text between them.
"""

import argparse
import random
import tempfile
import time

import mlx.core as mx
from mlx_lm import load

import mlx_scdpo  # noqa: F401
from eval.blocks import MARKDOWN
from mlx_scdpo.generation.code_loop import generate_with_code
from mlx_scdpo.sandbox.pool import SandboxPool
from mlx_scdpo.toy.tiny_model import make_tiny_model


def forcing(transcript):
    def proc(context, logits):
        n = context.size
        target = transcript[min(n, len(transcript) - 1)]
        return mx.where(mx.arange(logits.shape[-1]) == target, 0.0, -1e9).astype(logits.dtype)[None]

    return proc


def scripts(tok, n, seed=0):
    rng = random.Random(seed)
    out = []
    for i in range(n):
        prompt = tok.encode(f"Problem {i}:", add_special_tokens=False)
        ids = list(prompt)
        for b in range(3):
            words = " ".join(
                rng.choice(["so", "then", "we", "add", "the", "value"]) for _ in range(rng.randint(10, 60))
            )
            sleep = rng.uniform(0.02, 0.3)
            piece = f"{words}\n```python\nimport time\ntime.sleep({sleep:.3f})\nprint({b})\n```"
            ids += tok.encode(piece, add_special_tokens=False)
            ids += tok.encode(MARKDOWN.execution_block(f"{b}\n"), add_special_tokens=False)
        ids += tok.encode("\nSo \\boxed{2}.", add_special_tokens=False) + [tok.eos_token_id]
        out.append((prompt, ids))
    return out


def run(model, tok, items, schedule, batch):
    with SandboxPool(size=8, timeout=5.0, preload=("time",)) as pool:
        time.sleep(1.0)  # let the pool start its workers (same for both schedules)
        t = time.perf_counter()
        done = list(
            generate_with_code(
                model,
                tok,
                [p for p, _ in items],
                pool,
                max_tokens=2000,
                batch_size=batch,
                schedule=schedule,
                logits_processors=lambda i: [forcing(items[i][1])],
            )
        )
        dt = time.perf_counter() - t
    tokens = sum(sum(c.gen_mask) for c in done)
    assert all(c.executions == 3 for c in done)
    return tokens / dt, dt


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--solutions", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--size", default="5m")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        model, tok = load(str(make_tiny_model(d, args.size)))
        items = scripts(tok, args.solutions)
        run(model, tok, items[:4], "continuous", 4)  # warm-up
        res = {s: run(model, tok, items, s, args.batch_size) for s in ("rounds", "continuous")}
    for s, (tps, dt) in res.items():
        print(f"{s:>10}: {tps:7.0f} generated tokens/s, {dt:.2f} s")
    print(f"continuous / rounds: {res['continuous'][0] / res['rounds'][0]:.2f}x")


if __name__ == "__main__":
    main()
