#!/usr/bin/env python
"""The study's comparison of plain and symmetrized PET (Langer, Pozdnyakov & Ceriotti 2024) at full length: liquid
water (plain, grid 2i by multiple time stepping, ECSE), ice Ih proton disorder, and the isolated molecule. Runs,
resumes and analyses; `--report docs/study.md` writes the report from the outputs.

    python examples/study/run.py --short                      # every stage on tiny lengths (~3 min on 2 cores)
    python examples/study/run.py --hours 2                    # runs for ~2 h, then analyses what is done
    python examples/study/run.py --stages liquid --analyse    # analyse what the liquid runs have so far
    python examples/study/run.py --stages liquid --runs ecse  # one run per job (the rest on another core)
    python examples/study/run.py --analyse --report docs/study.md

Every MD run is a chain of segments with LAMMPS restart files (petmd.helpers.segments): kill it at any time and run
the same command again to continue. Long runs: give them one core at low priority, e.g.
`taskset -c 1 nice -n 19 python examples/study/run.py --hours 3`.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import analysis
import runs as study_runs

from petmd.errors import PetmdError
from petmd.helpers.example_cli import example_parser, parse_example_args

HERE = Path(__file__).resolve().parent
STAGES = ["liquid", "gas", "ice"]


def run_stages(args, lengths: study_runs.Lengths, deadline, records: Path) -> dict:
    """Run what is not done yet (runs with a record are done); returns {stage: whether its runs are complete}."""
    complete = {}
    if "liquid" in args.stages:
        complete["liquid"] = study_runs.run_liquid(args.output, args.model, lengths, args.runs, deadline, records)
    if "gas" in args.stages:
        gas = study_runs.gas_runs(args.output, args.model, lengths)
        todo = study_runs.chosen(gas, args.runs, study_runs.recorded_names(records, "gas", gas))
        complete["gas"] = study_runs.run_round_robin(todo, deadline)
    if "ice" in args.stages:
        recorded = study_runs.record_path(records, "ice", "summary")
        complete["ice"] = (recorded is not None and recorded.exists()) or analysis.run_ice(
            args.output, args.model, short=args.short, deadline=deadline
        )
    return complete


def log_invocation(out: Path, stages, hours, runs) -> None:
    """One line per call that runs anything (invocations.log): how often the study was started and resumed."""
    only = f" runs {' '.join(runs)}" if runs else ""
    with open(out / "invocations.log", "a") as fh:
        fh.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} stages {' '.join(stages)} hours {hours}{only}\n")


def main(argv=None) -> dict:
    parser = example_parser(__doc__, HERE)
    parser.add_argument("--short", action="store_true", help="tiny lengths: a check that every stage runs (CI)")
    parser.add_argument("--stages", nargs="+", choices=STAGES, default=STAGES, help="stages to run and analyse")
    parser.add_argument(
        "--hours", type=float, help="start no new MD segment after this many hours (default: run to the end)"
    )
    parser.add_argument(
        "--runs",
        nargs="+",
        choices=sorted({kind.name for kind in study_runs.LIQUID_KINDS + study_runs.GAS_KINDS}),
        help="run only these of the liquid and gas runs (one job per core: e.g. --runs ecse on one core, and, once "
        "the equilibration is done, --runs plain grid-2i-mts8 on another); all are analysed",
    )
    parser.add_argument(
        "--records",
        type=Path,
        metavar="DIR",
        help="where each finished liquid and gas run's analysis and the ice stage's summary are kept, so that the "
        "report survives the loss of the outputs (default: examples/study/records/MODEL, committed; with --short: "
        "OUTPUT/records)",
    )
    parser.add_argument("--analyse", action="store_true", help="run nothing: analyse the outputs there are")
    parser.add_argument("--report", type=Path, metavar="MD", help="write the report (docs/study.md) from the outputs")
    args = parse_example_args(parser, argv)
    if args.hours is not None and args.hours < 0:
        parser.error(f"--hours must be ≥ 0 (got {args.hours})")
    if args.records is not None and args.records.exists() and not args.records.is_dir():
        parser.error(f"--records {args.records} is a file: give a folder for the records (it is created if needed)")
    if args.runs:
        stage_kinds = {"liquid": study_runs.LIQUID_KINDS, "gas": study_runs.GAS_KINDS}
        names = {kind.name for stage in args.stages for kind in stage_kinds.get(stage, [])}
        unknown = [name for name in args.runs if name not in names]
        if unknown:
            parser.error(
                f"--runs {' '.join(unknown)}: no such run in --stages {' '.join(args.stages)} (its runs: "
                f"{', '.join(sorted(names)) or 'none'}); add the stage or leave the name out"
            )
    lengths = study_runs.SHORT if args.short else study_runs.FULL
    start = time.monotonic()
    deadline = start + 3600 * args.hours if args.hours is not None else None
    if not args.analyse:
        log_invocation(args.output, args.stages, args.hours, args.runs)
    records = args.records or (args.output / "records" if args.short else HERE / "records" / args.model.stem)
    complete = {} if args.analyse else run_stages(args, lengths, deadline, records)
    results = analysis.analyse(args.output, args.model, lengths, args.stages, records)
    results["complete"] = complete
    results["wall_s"] = time.monotonic() - start
    (args.output / "study.json").write_text(json.dumps(results, indent=1))
    print(analysis.summary_text(results))
    if args.report:
        import report

        report.write(results, args.report, args.output)
        print(f"report written to {args.report}")
    return results


if __name__ == "__main__":
    try:
        main()
    except PetmdError as error:
        sys.exit(f"error: {error}")
