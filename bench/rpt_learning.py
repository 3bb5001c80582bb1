"""Benchmark: does RPT in the completion format learn something a temperature change cannot explain?

Not a test. A search over the main job's levers (recipes/rpt_smollm2_cpu.yaml: SmolLM2-135M-Instruct,
LoRA, CHAMP): each setting is a list of recipe overrides run through `python -m rl.demo` in its own
output dir under --out (RPT data built once per setting and copied to its other seeds, so every
seed of a setting trains on the same rows). Each run's demo_summary.json gives the paired
before/after differences with their 95% CIs (paired bootstrap over held-out documents,
rl/eval/learning_report.py), and the table prints per setting and seed:

* temperature-fair: greedy top-1 and calibrated NLL (each model's temperature fitted on tokens of
  training documents) on the hard split of all held-out tokens (proxy entropy > 1.5) and on all tokens;
* sharpening-inclusive: expected accuracy at the sampling temperature, probe reward;
* wall time of the run.

A setting EARNS IT when it ran at least 3 seeds and in every seed the hard split's top-1 gain has a
CI above 0 (or its calibrated NLL a CI below 0) while the all-token calibrated NLL is not worse (its
CI does not lie above 0). The last line names the settings that earned it, or says none did.

Search (default): stage 1 runs every setting at the first seed; stage 2 runs the --confirm best
settings of stage 1 (by the hard split's top-1 gain) at the remaining seeds. One run takes about 6-7
minutes on a quiet 2-core CPU (RPT data build, 60 steps, both models' held-out evaluation).

Measured 2026-12-07 (this 2-core CPU; the recipe's lr was then 3e-4, so `demo` below is today's
`lr-3e-4` and `lr-1e-4` is today's `demo`). Stage 1 at seed 1: demo, hard-only, multi-token, kl-0.05,
then lr-1e-4; confirmed at seeds 2 and 3: multi-token (the best stage-1 hard top-1) and lr-1e-4 (the
only stage-1 setting whose calibrated NLL improved on both splits). 1,298 hard held-out tokens (proxy
entropy > 1.5) of 3,108; paired diffs trained - base, 95% CI over held-out documents:

    setting      seed  hard top-1 pts        hard cal. NLL            all top-1 pts         all cal. NLL             exp. acc. pts (sharp.)  wall s  fair gain
    demo (3e-4)  1     +0.23 [-1.70, +2.22]  -0.000 [-0.049, +0.037]  +0.42 [-0.72, +1.53]  +0.006 [-0.021, +0.026]  +2.48 [+2.07, +3.08]    1451*   no
    hard-only    1     +0.54 [-1.12, +2.31]  +0.364 [+0.209, +0.606]  -1.03 [-2.78, +0.51]  +0.242 [+0.123, +0.442]  -0.32 [-1.72, +0.90]    350     no
    multi-token  1     +0.85 [-0.97, +2.84]  +0.036 [+0.013, +0.057]  -0.06 [-1.18, +1.07]  +0.032 [+0.019, +0.043]  +1.76 [+1.09, +2.58]    349     no
    multi-token  2     +1.08 [-0.42, +2.55]  -0.020 [-0.043, +0.003]  +0.23 [-0.64, +0.85]  -0.007 [-0.019, +0.002]  +0.94 [+0.61, +1.26]    345     no
    multi-token  3     +1.77 [+0.07, +3.55]  -0.027 [-0.083, +0.017]  +0.64 [-0.27, +1.64]  +0.001 [-0.033, +0.026]  +1.91 [+1.33, +2.69]    351     yes
    kl-0.05      1     +0.46 [-1.27, +2.18]  -0.008 [-0.048, +0.023]  +0.58 [-0.35, +1.57]  +0.001 [-0.023, +0.017]  +2.28 [+1.92, +2.78]    380     no
    lr-1e-4      1     +0.77 [-0.22, +1.79]  -0.024 [-0.040, -0.011]  +0.51 [-0.08, +1.11]  -0.012 [-0.022, -0.005]  +1.01 [+0.85, +1.20]    437     yes
    lr-1e-4      2     +1.08 [-0.29, +2.64]  -0.015 [-0.031, -0.000]  +0.71 [+0.04, +1.36]  -0.011 [-0.021, -0.003]  +1.29 [+1.10, +1.48]    417     yes
    lr-1e-4      3     +1.31 [+0.24, +2.55]  -0.028 [-0.039, -0.018]  +0.68 [+0.19, +1.21]  -0.016 [-0.024, -0.010]  +1.15 [+1.00, +1.33]    385     yes
    (* run beside the CI test suite)

lr-1e-4 EARNS IT: in each of 3 seeds the calibrated NLL improves on the hard tokens and on all tokens
(CIs below 0; seed 2's hard upper bound is -0.0003), top-1 moves up in every seed (CI above 0 in
seed 3 only), and it keeps less of the sharpening (expected accuracy +1.0 to +1.3 pts vs +2.5 at 3e-4).
The gain is small (about 0.5-1% of the hard tokens' 3.07-nat NLL) and seeds 2-3 were run because
seed 1 looked good (stage 2 is the confirmation; the 5 stage-1 settings are a multiple comparison).
Not run: steps-240, rows-more, lr-1e-3, rank-64, select-surprisal, temperature-1.0, sharper-proxy.
The recipe now uses lr 1e-4.

    .venv/bin/python -m bench.rpt_learning --quick                 # the machinery end to end, one short run
    .venv/bin/python -m bench.rpt_learning --settings demo,hard-only,multi-token --seeds 1,2,3 --confirm 2
    .venv/bin/python -m bench.rpt_learning --list                  # the settings and their overrides
    .venv/bin/python -m bench.rpt_learning --smoke                 # a tiny local model: does it run?

`--quick` (1 step, 12 documents, half held out): 264 s (load ~2) to 666 s (load ~4.5) here at nice 19;
after that one step, hard top-1 -0.76 pts [-1.30, -0.29] and hard calibrated NLL +0.001 [-0.001, +0.002]
(one seed: a reading of the machinery, not a result).

`--proxy PATH` adds a `sharper-proxy` setting (rows chosen by another proxy model; only one model is
built in). Extra recipe overrides after `--` apply to every run. The last line is
`rpt_learning: settings=N runs=R earned=NAME[,NAME] | earned=none (criterion: ...)`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from bench.demo_runs import heldout_metric, run_demo

ROOT = Path(__file__).resolve().parents[1]

#: setting -> recipe overrides (on top of recipes/rpt_smollm2_cpu.yaml, 60 steps of 2 x 4 1-token guesses at lr 1e-4;
#: the search below measured the other levers on top of the recipe's earlier lr, 3e-4)
SETTINGS: dict[str, list[str]] = {
    "demo": [],
    "lr-3e-4": ["--learning_rate", "3e-4"],  # the recipe before the search: sharpening only
    "steps-240": ["--max_steps", "240"],
    "rows-more": ["--rpt_max_documents", "160", "--rpt_max_per_doc", "8", "--max_steps", "240"],
    "hard-only": ["--rpt_min_entropy", "2.0"],
    "multi-token": ["--max_completion_length", "3"],  # 2-4-token guesses: the prefix reward (Eq. 3) scores them
    "lr-1e-3": ["--learning_rate", "1e-3"],
    "rank-64": ["--lora_r", "64", "--lora_alpha", "128"],
    "kl-0.05": ["--beta", "0.05"],
    "select-surprisal": ["--rpt_select_by", "surprisal"],
    "temperature-1.0": ["--temperature", "1.0"],
}
QUICK_SETTINGS = ("demo",)
# half of 12 documents held out: with 8 documents and the recipe's 25% no document was held out (measured)
QUICK_OVERRIDES = ["--max_steps", "1", "--rpt_max_documents", "12", "--rpt_max_per_doc", "2", "--eval_fraction", "0.5",
                   "--save_steps", "1"]
DATA_KEYS = ("--rpt_", "--proxy_model", "--corpus", "--eval_fraction")  # overrides that change the RPT rows
CRITERION = ("3+ seeds; every seed: hard-token top-1 CI > 0 or calibrated NLL CI < 0, and all-token calibrated "
             "NLL CI not above 0")


def changes_data(overrides: list[str]) -> bool:
    return any(a.startswith(DATA_KEYS) for a in overrides if a.startswith("--"))


def run_one(setting: str, overrides: list[str], seed: int, out: Path, data: Path | None, extra: list[str]) -> dict:
    """One demo run; returns its summary with wall_seconds and log (and `error` when the demo failed)."""
    args = ["--seed", str(seed), "--run_name", f"bench-rpt-{setting}-seed{seed}", "--report_to", "none",
            *overrides, *extra]
    given = overrides + extra
    if "--save_steps" not in given:  # one checkpoint, at the end (the last --max_steps given wins)
        steps = [given[i + 1] for i, a in enumerate(given[:-1]) if a == "--max_steps"]
        args += ["--save_steps", steps[-1] if steps else "60"]
    log = out / setting / f"seed{seed}.log"
    code, summary = run_demo(out / setting / f"seed{seed}", log, args, data)
    if code:
        summary["error"] = f"the demo exited with {code}; see {log}"
    return summary


def fair_gain(summary: dict) -> bool:
    """This seed's hard split improves on a temperature-fair metric (CI excludes 0) and the all-token
    calibrated NLL is not worse (its CI does not lie above 0)."""
    top1, cal = heldout_metric(summary, "hard", "top1"), heldout_metric(summary, "hard", "nll_cal")
    everything = heldout_metric(summary, "all", "nll_cal")
    hard_up = (top1 is not None and top1["ci95"][0] > 0) or (cal is not None and cal["ci95"][1] < 0)
    return bool(hard_up and everything is not None and everything["ci95"][0] <= 0)


def earned(runs: list[dict]) -> bool:
    good = [r for r in runs if "error" not in r]
    return len(good) >= 3 and len(good) == len(runs) and all(fair_gain(r) for r in good)


def cell(entry: dict | None, scale: float, digits: int) -> str:
    if entry is None:
        return "n/a"
    lo, hi = entry["ci95"]
    return f"{scale * entry['diff']:+.{digits}f} [{scale * lo:+.{digits}f}, {scale * hi:+.{digits}f}]"


COLUMNS = (("hard top-1 pts", "hard", "top1", 100.0, 2), ("hard cal. NLL", "hard", "nll_cal", 1.0, 3),
           ("all top-1 pts", "all", "top1", 100.0, 2), ("all cal. NLL", "all", "nll_cal", 1.0, 3),
           ("exp. acc. pts (sharp.)", "all", "expected", 100.0, 2))


def table(results: dict[str, dict[int, dict]]) -> list[str]:
    """One row per setting and seed: each metric's paired diff [95% CI], the probe reward's, wall time."""
    head = ["setting", "seed", "hard n"] + [c[0] for c in COLUMNS] + ["probe reward (sharp.)", "wall s", "fair gain"]
    lines = []
    for setting, runs in results.items():
        for seed, summary in runs.items():
            if "error" in summary:
                lines.append([setting, str(seed), "-"] + ["error"] * len(COLUMNS) + ["-", f"{summary['wall_seconds']:.0f}",
                                                                                    summary["error"]])
                continue
            hard = summary.get("heldout_token_splits", {}).get("hard", {})
            probe = summary.get("probe_reward")
            lines.append([setting, str(seed), str(hard.get("count", 0))]
                         + [cell(heldout_metric(summary, split, key), scale, digits)
                            for _, split, key, scale, digits in COLUMNS]
                         + [cell(probe, 1.0, 3), f"{summary['wall_seconds']:.0f}", "yes" if fair_gain(summary) else "no"])
    widths = [max(len(h), *(len(r[i]) for r in lines)) if lines else len(h) for i, h in enumerate(head)]
    fmt = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths))  # noqa: E731
    return [fmt(head), "  ".join("-" * w for w in widths)] + [fmt(r) for r in lines]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--settings", default=None, help=f"comma-separated subset of: {', '.join(SETTINGS)}")
    parser.add_argument("--seeds", default="1,2,3")
    parser.add_argument("--confirm", type=int, default=2,
                        help="stage 2: how many of stage 1's best settings run the remaining seeds (0: every setting)")
    parser.add_argument("--proxy", default=None, help="a sharper proxy model: adds the `sharper-proxy` setting")
    parser.add_argument("--quick", action="store_true",
                        help=f"the machinery end to end: {', '.join(QUICK_SETTINGS)}, first seed, "
                             f"{' '.join(QUICK_OVERRIDES)}")
    parser.add_argument("--smoke", action="store_true",
                        help="a tiny local model and corpus (bench/smoke.py), the demo setting, one seed, 1 step, a "
                             "temporary --out: checks that the bench runs (its numbers mean nothing)")
    parser.add_argument("--list", action="store_true", help="print the settings and exit")
    parser.add_argument("--out", default=str(ROOT / "runs" / "bench-rpt-learning"))
    parser.add_argument("extra", nargs="*", help="recipe overrides passed to every run, after --")
    args = parser.parse_args(argv)
    settings = dict(SETTINGS)
    if args.proxy:
        settings["sharper-proxy"] = ["--proxy_model", args.proxy]
    if args.list:
        for name, overrides in settings.items():
            print(f"{name:18} {' '.join(overrides) or '(the demo recipe as is)'}")
        return 0
    if args.smoke:
        import tempfile

        from bench.smoke import rpt_overrides, tiny_corpus, tiny_model

        smoke_dir = tempfile.TemporaryDirectory(prefix="rpt-learning-smoke-")
        # signal check warn: a random model's rewards may all be equal, which `stop` (the recipe's) refuses
        args.extra = [*args.extra, *rpt_overrides(tiny_model(smoke_dir.name), tiny_corpus(smoke_dir.name)),
                      "--signal_check", "warn", "--max_steps", "1"]
        args.out = str(Path(smoke_dir.name) / "out")
        args.quick, args.seeds = False, args.seeds.split(",")[0]
    names = list(QUICK_SETTINGS) if args.quick or args.smoke else (
        args.settings.split(",") if args.settings else list(settings))
    unknown = [n for n in names if n not in settings]
    if unknown:
        parser.error(f"--settings: unknown {unknown}; see --list")
    seeds = [int(s) for s in args.seeds.split(",")]
    extra = list(args.extra) + (QUICK_OVERRIDES if args.quick else [])
    if args.quick:
        seeds = seeds[:1]
    out = Path(args.out) / ("quick" if args.quick else "search")
    results: dict[str, dict[int, dict]] = {n: {} for n in names}
    data: dict[str, Path] = {}

    def run(name: str, seed: int) -> None:
        overrides = settings[name]
        shared = data.get(name) if changes_data(overrides) else data.get("__default__")
        summary = run_one(name, overrides, seed, out, shared, extra)
        results[name][seed] = summary
        if "error" not in summary:
            built = out / name / f"seed{seed}" / "rpt-data"
            data.setdefault(name if changes_data(overrides) else "__default__", built)
        print(f"{name} seed {seed}: " + (summary["error"] if "error" in summary else
              f"hard top-1 {cell(heldout_metric(summary, 'hard', 'top1'), 100.0, 2)} pts, hard calibrated NLL "
              f"{cell(heldout_metric(summary, 'hard', 'nll_cal'), 1.0, 3)}; {summary['wall_seconds']:.0f} s"), flush=True)

    for name in names:  # stage 1: every setting, first seed
        run(name, seeds[0])
    if len(seeds) > 1:  # stage 2: the best settings, remaining seeds
        def score(name):
            first = results[name][seeds[0]]
            entry = heldout_metric(first, "hard", "top1") if "error" not in first else None
            return entry["ci95"][0] if entry else float("-inf")
        chosen = sorted(names, key=score, reverse=True)[: args.confirm or len(names)]
        for name in chosen:
            for seed in seeds[1:]:
                run(name, seed)
    print()
    print("\n".join(table(results)))
    print(f"fair gain: {CRITERION}")
    (out / "table.json").write_text(json.dumps({"criterion": CRITERION, "settings": {n: settings[n] for n in names},
                                                "extra": extra, "results": results}, indent=2, default=str))
    winners = [n for n in names if earned(list(results[n].values()))]
    runs = sum(len(r) for r in results.values())
    print(f"rpt_learning: settings={len(names)} runs={runs} earned={','.join(winners) if winners else 'none'} "
          f"(criterion: {CRITERION})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
