"""Why SCDPO does (not) beat DPO on the toy world: beta and temperature-ramp ablations.

    python scripts/toy_ablation.py --base runs/toy_experiment_v2/seed0 [--output-dir runs/toy_ablation]

Starts from one finished ``quickstart`` directory (its sampled solutions and pairs) and

* trains DPO (naive pairs) and SCDPO (naive + step-controlled) adapters at each ``--betas``
  value with ``--learning-rate`` (other settings as quickstart), and evaluates each on the
  toy test set;
* reruns ``step-control`` with each ``--ramps`` temperature schedule (``T0:DT:TMAX``), trains
  an SCDPO adapter on naive + those pairs, and measures where the rejected continuations
  really go wrong: the toy generator knows every step, so a step-controlled negative
  "starts erring after step k" exactly when its first wrong step is k+1.

Writes ``OUTPUT_DIR/results.json`` and a markdown table ``OUTPUT_DIR/results.md``;
finished runs are kept (resumable).
"""

import argparse
import json
import shutil
from collections import Counter
from pathlib import Path

import mlx_scdpo  # noqa: F401
from mlx_scdpo.evaluate import EvalArgs, run_eval
from mlx_scdpo.jsonl import read_finished
from mlx_scdpo.pairs import build_pairs
from mlx_scdpo.quickstart import QuickstartArgs, default_model
from mlx_scdpo.step_control import StepControlArgs, run_step_control
from mlx_scdpo.toyworld import first_wrong_step, parse_question
from mlx_scdpo.train import TrainArgs, run_train


def train_and_eval(model, data, out: Path, base: Path, qs: QuickstartArgs, lr: float, beta: float) -> dict:
    if (out / "result.json").exists():
        return json.loads((out / "result.json").read_text())
    last = run_train(TrainArgs(model=model, data=str(data), adapter_path=str(out / "adapter"), num_layers=-1,
                               lora_rank=qs.lora_rank, iters=qs.iters, batch_size=qs.batch_size, learning_rate=lr,
                               beta=beta, rpo_alpha=qs.rpo_alpha, steps_per_report=5, steps_per_eval=0,
                               save_every=qs.iters, seed=qs.seed, ref_cache_dir=str(out.parent / "ref_cache"),
                               progress=False))
    metrics, _, _ = run_eval(EvalArgs(model=model, adapter_path=str(out / "adapter"), task="gsm8k",
                                      data_files=str(base / "data" / "test_problems.jsonl"), max_tokens=96,
                                      batch_size=128, output_dir=str(out / "eval"), progress=False))
    result = {"accuracy": metrics["exact_match,scdpo-grader"],
              **{k: last[k] for k in ("rewards/accuracies", "rewards/margins", "logps/chosen", "logps/rejected")}}
    (out / "result.json").write_text(json.dumps(result, indent=2))
    return result


def error_location(pairs_file: Path) -> dict:
    """How many step-controlled negatives first go wrong right after their prefix (step k+1)."""
    where, no_error = Counter(), 0
    for row in read_finished(pairs_file, None):
        problem = parse_question(row["question"])
        step = first_wrong_step(problem, row["prefix"] + row["rejected"]) if problem else None
        if step is None:  # every step right: the grader and the generator disagree
            no_error += 1
            continue
        where["k+1" if step == row["k"] + 1 else "later" if step > row["k"] + 1 else "in prefix"] += 1
    n = sum(where.values()) + no_error
    return {"pairs": n, **{k: v / max(n, 1) for k, v in where.items()}, "no wrong step": no_error / max(n, 1),
            "k": dict(Counter(str(r["k"]) for r in read_finished(pairs_file, None)))}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", required=True, help="A finished quickstart (or toy_experiment seed) directory.")
    ap.add_argument("--output-dir", default="runs/toy_ablation")
    ap.add_argument("--learning-rate", type=float, default=2e-5)
    ap.add_argument("--betas", type=float, nargs="+", default=[0.05, 0.1, 0.5])
    ap.add_argument("--ramps", nargs="*", default=["0.8:0.0:0.8", "1.1:0.1:1.4"])
    args = ap.parse_args()
    base, out = Path(args.base), Path(args.output_dir)
    config = json.loads((base / "results.json").read_text())["config"]
    qs = QuickstartArgs(**{k: v for k, v in config.items() if k in QuickstartArgs.__dataclass_fields__})
    model = qs.model or default_model()
    results = {"base": str(base), "learning_rate": args.learning_rate, "beta": {}, "ramp": {}}
    results["ramp"][f"{qs.t0}:{qs.dt}:{qs.tmax} (base)"] = error_location(base / "data" / "pairs_step_control.jsonl")
    for beta in args.betas:
        for name, data in (("dpo", base / "pairs" / "naive"), ("scdpo", base / "pairs")):
            print(f"== beta {beta} {name}", flush=True)
            results["beta"][f"{beta} {name}"] = train_and_eval(model, data, out / f"beta{beta}-{name}", base, qs,
                                                               args.learning_rate, beta)
    for ramp in args.ramps:
        t0, dt, tmax = map(float, ramp.split(":"))
        d = out / f"ramp{ramp.replace(':', '_')}"
        (d / "data").mkdir(parents=True, exist_ok=True)
        if not (d / "data" / "pairs_step_control.jsonl").exists():
            print(f"== step-control ramp {ramp}", flush=True)
            shutil.copy(base / "data" / "solutions.jsonl", d / "data" / "solutions.jsonl")
            run_step_control(StepControlArgs(model=model, solutions=str(d / "data" / "solutions.jsonl"),
                                             output_dir=str(d / "data"), rounds=qs.rounds, t0=t0, dt=dt, tmax=tmax,
                                             max_tokens=96, batch_size=128, seed=qs.seed, progress=False))
        build_pairs([str(base / "data" / "pairs_naive.jsonl"), str(d / "data" / "pairs_step_control.jsonl")],
                    str(d / "pairs"), 0.02, qs.seed)
        print(f"== ramp {ramp} scdpo", flush=True)
        results["ramp"][ramp] = {**error_location(d / "data" / "pairs_step_control.jsonl"),
                                 **train_and_eval(model, d / "pairs", d / "scdpo", base, qs, args.learning_rate, 0.1)}
    (out / "results.json").write_text(json.dumps(results, indent=2))
    lines = [f"lr {args.learning_rate}, {qs.iters} steps of {qs.batch_size} pairs, NLL weight {qs.rpo_alpha}", "",
             "| beta | DPO acc | SCDPO acc | DPO pair acc / margin | SCDPO pair acc / margin |", "|---|---|---|---|---|"]
    for beta in args.betas:
        d, s = results["beta"][f"{beta} dpo"], results["beta"][f"{beta} scdpo"]
        lines.append(f"| {beta} | {100 * d['accuracy']:.1f} | {100 * s['accuracy']:.1f} | "
                     f"{d['rewards/accuracies']:.2f} / {d['rewards/margins']:.2f} | "
                     f"{s['rewards/accuracies']:.2f} / {s['rewards/margins']:.2f} |")
    lines += ["", "| ramp T0:dT:Tmax | step-controlled pairs | first error at k+1 | later | no wrong step | k | "
                  "SCDPO acc |", "|---|---|---|---|---|---|---|"]
    for ramp, r in results["ramp"].items():
        acc = f"{100 * r['accuracy']:.1f}" if "accuracy" in r else "-"
        lines.append(f"| {ramp} | {r['pairs']} | {100 * r.get('k+1', 0):.0f}% | {100 * r.get('later', 0):.0f}% | "
                     f"{100 * r['no wrong step']:.0f}% | {r['k']} | {acc} |")
    (out / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
