"""Choosing the toy learning rate and beta, on validation problems only; the temperature ramp.

    python scripts/toy_ablation.py --base runs/toy_select/seed0 [--output-dir runs/toy_ablation]
        [--learning-rates 1e-5 2e-5 5e-5] [--betas 0.1 0.5] [--ramps ...]

Starts from one finished ``quickstart`` directory (its sampled solutions and pairs) and

* trains DPO (naive pairs) and SCDPO (naive + step-controlled) adapters for every
  ``--learning-rates`` x ``--betas`` pair (other settings as quickstart), and evaluates each
  on the first ``--n-valid`` problems of the setting's validation split — never on test:
  the pair with the best mean validation accuracy of DPO and SCDPO is the one to use;
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
import sys
from pathlib import Path

import mlx_scdpo  # noqa: F401
from mlx_scdpo.config import check_value
from mlx_scdpo.errors import CommandError, UserError
from mlx_scdpo.method.pairs import build_pairs
from mlx_scdpo.method.step_control import StepControlArgs, run_step_control
from mlx_scdpo.run_state import folder_lock
from mlx_scdpo.toy.evaluate import step_control_error_positions
from mlx_scdpo.toy.quickstart import QuickstartArgs, default_model, evaluate_on, toy_max_tokens
from mlx_scdpo.toy.world import MAX_VALID, toy_splits
from mlx_scdpo.training.train import TrainArgs, run_train


def train_and_eval(model, data, out: Path, valid: list, qs: QuickstartArgs, lr: float, beta: float) -> dict:
    if (out / "result.json").exists():
        return json.loads((out / "result.json").read_text())
    last = run_train(
        TrainArgs(
            model=model,
            data=str(data),
            adapter_path=str(out / "adapter"),
            num_layers=-1,
            lora_rank=qs.lora_rank,
            iters=qs.iters,
            batch_size=qs.batch_size,
            learning_rate=lr,
            beta=beta,
            rpo_alpha=qs.rpo_alpha,
            steps_per_report=max(1, qs.iters // 20),
            steps_per_eval=0,
            save_every=qs.iters,
            seed=qs.seed,
            ref_cache_dir=str(out.parent / "ref_cache"),
            progress=False,
        )
    )
    ev = evaluate_on(model, valid, out / "valid_eval.jsonl", str(out / "adapter"))
    result = {
        "valid_accuracy": ev["accuracy"],
        "valid_all_steps_right": ev["all_steps_right"],
        **{k: last[k] for k in ("rewards/accuracies", "rewards/margins", "logps/chosen", "logps/rejected")},
    }
    (out / "result.json").write_text(json.dumps(result, indent=2))
    return result


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", required=True, help="A finished quickstart (or toy_experiment seed) directory.")
    ap.add_argument("--output-dir", default="runs/toy_ablation")
    ap.add_argument("--learning-rates", type=float, nargs="+", default=[1e-5, 2e-5, 5e-5])
    ap.add_argument("--betas", type=float, nargs="+", default=[0.1, 0.5])
    ap.add_argument("--n-valid", type=int, default=512, help="Validation problems (never the test split).")
    ap.add_argument(
        "--ramps", nargs="*", default=[], help="Extra step-control schedules T0:DT:TMAX to compare."
    )
    args = ap.parse_args()
    base, out = Path(args.base), Path(args.output_dir)
    # Every flag checked before any folder is made or model loads.
    for lr in args.learning_rates:
        check_value("learning_rate", lr)
    for beta in args.betas:
        check_value("beta", beta)
    if not 1 <= args.n_valid <= MAX_VALID:
        raise UserError(f"--n-valid must be 1..{MAX_VALID} (got {args.n_valid})")
    ramps = {ramp: parse_ramp(ramp) for ramp in args.ramps}
    qs = base_args(base)
    with folder_lock(out, "toy_ablation"):  # a second run on this folder: one line, exit 2
        run_grid(args, ramps, base, out, qs)


def parse_ramp(ramp: str) -> tuple[float, float, float]:
    """``T0:DT:TMAX`` as three checked temperatures."""
    parts = ramp.split(":")
    try:
        t0, dt, tmax = map(float, parts)
    except ValueError:
        raise UserError(f"--ramps {ramp!r}: expected T0:DT:TMAX, e.g. 0.8:0.1:1.1") from None
    t0, dt, tmax = (check_value(name, v) for name, v in zip(("t0", "dt", "tmax"), (t0, dt, tmax)))
    if t0 > tmax:
        raise UserError(f"--ramps {ramp!r}: T0 {t0} must not exceed TMAX {tmax}")
    return t0, dt, tmax


def base_args(base: Path) -> QuickstartArgs:
    """The finished quickstart run's arguments, from its ``results.json``."""
    path = base / "results.json"
    try:
        config = json.loads(path.read_text())["config"]
        return QuickstartArgs(**{k: v for k, v in config.items() if k in QuickstartArgs.__dataclass_fields__})
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise UserError(f"{path}: not a finished quickstart run ({type(e).__name__}: {e})") from None


def run_grid(args, ramps: dict, base: Path, out: Path, qs: QuickstartArgs) -> None:
    model = qs.model or default_model(qs.max_steps)
    valid = toy_splits(0, args.n_valid, 0, min_steps=qs.min_steps, max_steps=qs.max_steps).valid
    results = {"base": str(base), "n_valid": len(valid), "grid": {}, "ramp": {}}
    results["ramp"][f"{qs.t0}:{qs.dt}:{qs.tmax} (base)"] = step_control_error_positions(
        base / "data" / "pairs_step_control.jsonl"
    )
    for lr in args.learning_rates:
        for beta in args.betas:
            for name, data in (("dpo", base / "pairs" / "naive"), ("scdpo", base / "pairs")):
                print(f"== lr {lr} beta {beta} {name}", flush=True)
                results["grid"][f"{lr} {beta} {name}"] = train_and_eval(
                    model, data, out / f"lr{lr}-beta{beta}-{name}", valid, qs, lr, beta
                )
    best = max(
        ((lr, beta) for lr in args.learning_rates for beta in args.betas),
        key=lambda c: sum(results["grid"][f"{c[0]} {c[1]} {n}"]["valid_accuracy"] for n in ("dpo", "scdpo")),
    )
    results["selected"] = {"learning_rate": best[0], "beta": best[1]}
    for ramp, (t0, dt, tmax) in ramps.items():
        d = out / f"ramp{ramp.replace(':', '_')}"
        (d / "data").mkdir(parents=True, exist_ok=True)
        if not (d / "data" / "pairs_step_control.jsonl").exists():
            print(f"== step-control ramp {ramp}", flush=True)
            shutil.copy(base / "data" / "solutions.jsonl", d / "data" / "solutions.jsonl")
            run_step_control(
                StepControlArgs(
                    model=model,
                    solutions=str(d / "data" / "solutions.jsonl"),
                    output_dir=str(d / "data"),
                    rounds=qs.rounds,
                    t0=t0,
                    dt=dt,
                    tmax=tmax,
                    max_tokens=toy_max_tokens(qs.max_steps),
                    batch_size=128,
                    seed=qs.seed,
                    progress=False,
                )
            )
        build_pairs(
            [str(base / "data" / "pairs_naive.jsonl"), str(d / "data" / "pairs_step_control.jsonl")],
            str(d / "pairs"),
            0.02,
            qs.seed,
        )
        print(f"== ramp {ramp} scdpo", flush=True)
        results["ramp"][ramp] = {
            **step_control_error_positions(d / "data" / "pairs_step_control.jsonl"),
            **train_and_eval(model, d / "pairs", d / "scdpo", valid, qs, *best),
        }
    (out / "results.json").write_text(json.dumps(results, indent=2))
    lines = [
        f"{qs.iters} steps of {qs.batch_size} pairs, NLL weight {qs.rpo_alpha}; validation accuracy on "
        f"{len(valid)} problems of {qs.min_steps}-{qs.max_steps} steps",
        "",
        "| lr | beta | DPO valid acc | SCDPO valid acc | DPO pair acc / margin | SCDPO pair acc / margin |",
        "|---|---|---|---|---|---|",
    ]
    for lr in args.learning_rates:
        for beta in args.betas:
            d, s = results["grid"][f"{lr} {beta} dpo"], results["grid"][f"{lr} {beta} scdpo"]
            mark = " (selected)" if (lr, beta) == best else ""
            lines.append(
                f"| {lr:g}{mark} | {beta} | {100 * d['valid_accuracy']:.1f} | {100 * s['valid_accuracy']:.1f} | "
                f"{d['rewards/accuracies']:.2f} / {d['rewards/margins']:.2f} | "
                f"{s['rewards/accuracies']:.2f} / {s['rewards/margins']:.2f} |"
            )
    lines += [
        "",
        "| ramp T0:dT:Tmax | step-controlled pairs | first error at k+1 | later | no wrong step | k | "
        "SCDPO valid acc |",
        "|---|---|---|---|---|---|---|",
    ]
    for ramp, r in results["ramp"].items():
        acc = f"{100 * r['valid_accuracy']:.1f}" if "valid_accuracy" in r else "-"
        lines.append(
            f"| {ramp} | {r['pairs']} | {100 * r.get('k+1', 0):.0f}% | {100 * r.get('later', 0):.0f}% | "
            f"{100 * r.get('none', 0):.0f}% | {r['k']} | {acc} |"
        )
    (out / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    try:
        main()
    except CommandError as e:  # a bad flag or base folder, a folder in use: one line, exit 2
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
