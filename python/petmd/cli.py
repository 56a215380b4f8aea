"""The `petmd` command line: argument parsing and dispatch only."""

from __future__ import annotations

import argparse
import json
import sys
import traceback
from pathlib import Path

from .errors import PetmdError
from .precision import DTYPE_NAMES


def _train(args) -> int:
    from .distributed import stop, world_from_environment
    from .train import summary_table, train_from_config

    if args.max_steps is not None and args.max_steps < 1:
        raise PetmdError(f"--max-steps {args.max_steps}: give a number of optimizer steps of at least 1")
    if args.max_time is not None and not args.max_time >= 0:
        raise PetmdError(f"--max-time must be a number of seconds of at least 0, got {args.max_time}")
    world = world_from_environment()  # several processes when started by torchrun
    finished = False
    try:
        result = train_from_config(
            args.config,
            args.output,
            resume=args.resume,
            max_time=args.max_time,
            progress=not args.no_progress,
            init=args.init,
            max_steps=args.max_steps,
            world=world,
        )
        finished = True
    finally:
        stop(finished)
    if not world.is_main:  # rank 0 reports for all
        return 0
    if args.json:
        print(json.dumps({k: v for k, v in result.items() if k != "history"} | {"history": result["history"]}))
    else:
        print(summary_table(result))
    return 0


def _check_output_folder(path, option: str = "-o") -> None:
    """Refuses, before any work, an output folder that is an existing file."""
    if path is not None and Path(path).exists() and not Path(path).is_dir():
        raise PetmdError(f"{option} {path} is a file: give a folder for the outputs (it is created if needed)")


def _check_at_least(value, least: int, option: str) -> None:
    if value is not None and value < least:
        raise PetmdError(f"{option} must be at least {least}, got {value}")


def _read_indices(path) -> list:
    try:
        value = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise PetmdError(f"--indices {path}: cannot read a JSON list of frame indices ({err})") from None
    if isinstance(value, dict):  # a training run's split.json
        if "validation" not in value:
            raise PetmdError(f"--indices {path}: a JSON object must hold a 'validation' list (split.json)")
        value = value["validation"]
    if not isinstance(value, list) or not all(isinstance(i, int) for i in value):
        raise PetmdError(f"--indices {path}: expected a list of integer frame indices")
    return value


def _eval(args) -> int:
    from .evaluate import evaluate, format_table

    indices = _read_indices(args.indices) if args.indices else None
    result = evaluate(
        args.model,
        args.data,
        args.energy_key,
        args.forces_key,
        indices=indices,
        progress=not args.json,
        stress_key=args.stress_key,
        virial_key=args.virial_key,
        uncertainty=args.uncertainty or args.calibration_plot is not None,
        calibration_plot_path=args.calibration_plot,
        symmetrize=args.symmetrize,
    )
    print(json.dumps(result, indent=1) if args.json else format_table(result))
    return 0


def _export(args) -> int:
    from .checkpoint import load_checkpoint, save_weights_only
    from .export import export_checkpoint

    # read first, so that nothing is written when the source has no training record to ship (an exported file)
    state = load_checkpoint(args.checkpoint) if args.weights_checkpoint else None
    meta = export_checkpoint(
        args.checkpoint,
        args.output,
        dtype=args.dtype,
        symmetrize=args.symmetrize,
        uncertainty=args.uncertainty,
        data=args.data,
        validation_data=args.validation_data,
        progress=not args.json,
    )
    if state is not None:
        save_weights_only(state, args.weights_checkpoint)
    if args.json:
        print(json.dumps(meta))
    else:
        print(
            f"exported {args.checkpoint} → {args.output} ({meta['dtype']}, species {' '.join(meta['species'])}, "
            f"cutoff {meta['cutoff']} Å, interaction range {meta['interaction_range']} Å, "
            f"symmetrize {meta['symmetrize']})"
        )
        if args.uncertainty:
            print(format_calibration(meta["uncertainty"]))
    return 0


def format_calibration(uncertainty: dict) -> str:
    v = uncertainty["validation"]
    return (
        f"uncertainty (LLPR, {uncertainty['features']} last-layer features, covariance of "
        f"{uncertainty['training_frames']} training frames, α = {uncertainty['alpha']:.4g} fitted on "
        f"{v['n_frames']} validation frames): energy errors within 1σ {100 * v['within_1_sigma']:.0f} % and 2σ "
        f"{100 * v['within_2_sigma']:.0f} % (Gaussian: 68 and 95 %); median σ {v['median_sigma_mev_per_atom']:.3f} "
        f"meV/atom, median |error| {v['median_abs_error_mev_per_atom']:.3f} meV/atom"
    )


def _symmetry(args) -> int:
    from .symmetry import format_table, symmetry_error, write_report

    _check_output_folder(args.output)
    _check_at_least(args.stride, 1, "--stride")
    _check_at_least(args.max_frames, 1, "--max-frames")
    _check_at_least(args.atoms_per_batch, 1, "--atoms-per-batch")
    _check_at_least(args.seed, 0, "--seed")
    indices = _read_indices(args.indices) if args.indices else None
    result = symmetry_error(
        args.model,
        args.data,
        grid=args.grid,
        indices=indices,
        stride=args.stride,
        max_frames=args.max_frames,
        atoms_per_batch=args.atoms_per_batch,
        seed=args.seed,
        progress=not args.json,
        symmetrize=args.symmetrize,
    )
    written = write_report(result, args.output) if args.output else []
    if args.json:
        print(json.dumps({k: v for k, v in result.items() if k != "frames"}, indent=1))
    else:
        print(format_table(result))
        for path in written:
            print(f"wrote {path}")
    return 0


def _observables(args) -> int:
    from .observables.analyze import Options, analyze
    from .observables.output import write_outputs

    options = Options(
        types=args.types,
        timestep=args.timestep,
        frame_interval=args.frame_interval,
        r_max=args.r_max,
        rdf_bins=args.rdf_bins,
        dipole_bins=args.dipole_bins,
        orientation_bins=tuple(args.orientation_bins),
        n_blocks=args.blocks,
        max_lag=args.max_lag,
        fit_window=tuple(args.fit) if args.fit else None,
        discard=args.discard,
        progress=not args.json,
    )
    _check_options(options)
    _check_output_folder(args.output)
    result = analyze(args.inputs, options)
    _print_observables(result, args, write_outputs(result, args.output), "")
    return 0


def _print_observables(result: dict, args, written, what: str) -> None:
    """What `petmd observables` and `petmd replicas` print: observables.json with --json, else the summary."""
    from .observables.output import summary

    if args.json:
        print((Path(args.output) / "observables.json").read_text())
    else:
        print(summary(result))
        print(f"{what}wrote {len(written)} files to {args.output}/ (observables.json, CSV, PNG)")


def _replicas(args) -> int:
    from .observables.analyze import load_observables
    from .observables.output import write_outputs
    from .observables.replicas import check_same_system, merge_replicas

    if len(args.runs) < 2:
        raise PetmdError("replicas needs at least two folders written by petmd observables")
    results = [load_observables(folder) for folder in args.runs]
    check_same_system(results, args.runs)
    _check_output_folder(args.output)
    merged = merge_replicas(results)
    _print_observables(merged, args, write_outputs(merged, args.output), f"merged {len(results)} replicas; ")
    return 0


def _check_options(options) -> None:
    if options.n_blocks < 2:
        raise PetmdError(f"--blocks must be at least 2 (errors need two blocks), got {options.n_blocks}")
    _check_at_least(options.rdf_bins, 1, "--rdf-bins")
    _check_at_least(options.dipole_bins, 1, "--dipole-bins")
    _check_at_least(min(options.orientation_bins), 1, "--orientation-bins")
    positive = {
        "--r-max": options.r_max,
        "--timestep": options.timestep,
        "--frame-interval": options.frame_interval,
        "--max-lag": options.max_lag,
    }
    for name, value in positive.items():
        if value is not None and not value > 0:
            raise PetmdError(f"{name} must be positive, got {value}")
    if not options.discard >= 0:
        raise PetmdError(f"--discard must be at least 0 ps, got {options.discard}")
    if options.fit_window and not 0 <= options.fit_window[0] < options.fit_window[1]:
        raise PetmdError(f"--fit needs 0 <= START < END (ps), got {options.fit_window}")


def _compare(args) -> int:
    from .observables.compare import compare_runs, write_report

    if not args.threshold > 0:
        raise PetmdError(f"--threshold must be a positive number of standard errors, got {args.threshold}")
    if not str(args.output).endswith(".md"):
        _check_output_folder(args.output)
    result = compare_runs(args.runs, threshold=args.threshold, force=args.force, names=args.names)
    report = write_report(result, args.output)
    if args.json:
        print(json.dumps(result["json"], indent=1))
    else:
        print(result["text"])
        print(f"report: {report}")
    return 0


INDICES_HELP = (
    "file with a JSON list of frame numbers of the data file, or a training run's split.json (its validation frames)"
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="petmd", description="Train, evaluate and export PET potentials.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser(
        "train",
        help="train a PET model from a YAML config",
        description="Train PET on energies and forces (extxyz) with random O(3) augmentation. On several "
        "processes or GPUs, start it with torchrun: `torchrun --standalone --nproc-per-node N -m petmd train CONFIG "
        "-o RUN` (data-parallel; the global batch is shared out; README, 'Training on several processes or GPUs').",
    )
    p.add_argument("config", help="YAML config (sections model, data, training)")
    p.add_argument("-o", "--output", default="run", help="output directory (checkpoints, metrics.csv)")
    p.add_argument("--resume", action="store_true", help="continue from OUTPUT/last.ckpt")
    p.add_argument(
        "--init",
        metavar="CHECKPOINT",
        help="start a new run from this checkpoint's weights (training or weights-only .ckpt; same model "
        "section): fresh optimizer and learning-rate schedule, e.g. to continue with a new recipe",
    )
    p.add_argument(
        "--max-time",
        type=float,
        default=None,
        metavar="SECONDS",
        help="stop cleanly (checkpoint written) after this many seconds",
    )
    p.add_argument(
        "--max-steps",
        type=int,
        default=None,
        metavar="N",
        help="stop cleanly (checkpoint written) once the run has taken N optimizer steps in all, counting "
        "those before a --resume: a stop that reruns reproduce, unlike --max-time",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--json", action="store_true", help="print the final summary as JSON")
    p.set_defaults(func=_train)

    p = sub.add_parser(
        "eval",
        help="energy/force errors of a model on a data file",
        description="Energy (meV/atom) and force (meV/Å) errors, overall and by config_type/phase.",
    )
    p.add_argument("model", help="checkpoint (.ckpt) or exported model (.pt)")
    p.add_argument("data", help="labelled structures (extxyz or any ASE format)")
    p.add_argument("--energy-key", default="energy", metavar="KEY", help="info key of the energies (default energy)")
    p.add_argument("--forces-key", default="forces", metavar="KEY", help="array key of the forces (default forces)")
    p.add_argument(
        "--stress-key",
        default="stress",
        metavar="KEY",
        help="info key of ASE stresses, eV/Å³ (default stress; frames with one get stress errors in GPa)",
    )
    p.add_argument(
        "--virial-key", default="virial", metavar="KEY", help="info key of virials W = −Vσ, eV (default virial)"
    )
    p.add_argument("--indices", metavar="JSON", help=INDICES_HELP)
    p.add_argument(
        "--uncertainty",
        action="store_true",
        help="also judge the model's energy uncertainty on these frames: fraction of errors within 1σ and 2σ, "
        "Gaussian NLL (needs a model exported with --uncertainty)",
    )
    p.add_argument("--calibration-plot", metavar="PNG", help="with --uncertainty: write |error| against σ here")
    p.add_argument(
        "--symmetrize",
        default=None,
        metavar="MODE",
        help="evaluate the model in this mode (none, random, grid:G, ecse) instead of the one stored in it: the "
        "errors of the symmetrized potential that MD with `symmetrize ...` runs on",
    )
    p.add_argument("--json", action="store_true", help="print the figures as JSON")
    p.set_defaults(func=_eval)

    p = sub.add_parser(
        "symmetry",
        help="symmetry error: plain model vs its average over a rotation grid",
        description="How far a model is from rotation invariant: per frame, the plain energy and "
        "forces against their average over a rotation grid (forces rotated back), and "
        "the spread over the grid; summarised by config_type/phase.",
    )
    p.add_argument("model", help="checkpoint (.ckpt) or exported model (.pt)")
    p.add_argument("data", help="structures (extxyz or any ASE format; labels not needed)")
    p.add_argument("--grid", default="3i", help="0, i, L or Li (L >= 1, e.g. 2, 2i, 3i) or random:K (default 3i)")
    p.add_argument("--indices", metavar="JSON", help=INDICES_HELP)
    p.add_argument("--stride", type=int, default=1, metavar="N", help="use every N-th frame (default 1)")
    p.add_argument("--max-frames", type=int, default=None, metavar="N", help="use at most N frames")
    p.add_argument(
        "--atoms-per-batch",
        type=int,
        default=2000,
        metavar="N",
        help="atoms per model call: rotated copies of a frame are batched up to this; memory grows with "
        "it (study-size model: ~3 MiB/atom) (default 2000)",
    )
    p.add_argument("--seed", type=int, default=0, metavar="N", help="seed (>= 0) of random:K grids (default 0)")
    p.add_argument(
        "--symmetrize",
        default=None,
        metavar="MODE",
        help="evaluate the model in this mode (none, random, grid:G, ecse) instead of the one stored in it",
    )
    p.add_argument("-o", "--output", help="folder for symmetry.json, frames.csv and symmetry-histogram.png")
    p.add_argument("--json", action="store_true", help="print the figures as JSON")
    p.set_defaults(func=_symmetry)

    p = sub.add_parser(
        "export",
        help="export a checkpoint to TorchScript",
        description="Write a self-contained TorchScript model (see docs/model-interface.md) from a training "
        "checkpoint, or re-export an exported file of any format version in this petmd's format.",
    )
    p.add_argument("checkpoint", help="a training checkpoint, or an exported model to re-export")
    p.add_argument("-o", "--output", required=True, help="output file, e.g. model.pt")
    p.add_argument("--dtype", choices=DTYPE_NAMES, default="float32")
    p.add_argument(
        "--symmetrize",
        default="none",
        metavar="MODE",
        help="what the model returns by default: none (as trained), random (a random O(3) rotation per "
        "call), grid:G (average over rotation grid G, e.g. grid:2i) or ecse (exact symmetrization in "
        "local frames, docs/symmetry.md); pair_style pet can override it (default none)",
    )
    p.add_argument(
        "--weights-checkpoint",
        metavar="PATH",
        help="also write the checkpoint's weights, config and history without optimizer state to PATH "
        "(what models/ ships next to an exported model)",
    )
    p.add_argument(
        "--uncertainty",
        action="store_true",
        help="calibrate the last-layer uncertainty (docs/uncertainty.md) and store it in the file: covariance of "
        "the training frames' features, scale fitted on the validation frames (a checkpoint's own split)",
    )
    p.add_argument(
        "--data",
        metavar="FILE",
        help="with --uncertainty: the training frames (default: the checkpoint's data file, with its stride and "
        "split; needed when re-exporting an exported file)",
    )
    p.add_argument(
        "--validation-data",
        metavar="FILE",
        help="with --uncertainty: labelled frames to fit the scale on (default: the checkpoint's validation split)",
    )
    p.add_argument("--json", action="store_true", help="print the metadata as JSON")
    p.set_defaults(func=_export)

    p = sub.add_parser(
        "observables",
        help="observables of a water/ice run with block-average errors",
        description="Radial distribution functions, dipole correlations c_L(r), c_T(r), lab-frame "
        "orientation free energy, oxygen MSD and diffusion, orientation autocorrelation, "
        "density, energies, conserved-quantity drift, angular momentum of a single "
        "molecule: each with a standard error from block averaging. Reads LAMMPS text "
        "dumps (id type|element x y z with image flags, or xu/xs columns; any box), "
        "LAMMPS logs (thermo, timestep, thermostat targets, pair_coeff elements), extxyz "
        "and ASE trajectories. Several trajectory files are consecutive parts of one run.",
    )
    p.add_argument("inputs", nargs="+", metavar="TRAJ", help="trajectory files and LAMMPS logs of one run")
    p.add_argument("-o", "--output", required=True, help="folder for observables.json, CSV files and PNG plots")
    p.add_argument(
        "--types",
        nargs="+",
        metavar="ELEMENT",
        help="element of each LAMMPS atom type in type order, e.g. O H (default: the dump's element "
        "column, else the log's 'pair_coeff * * ...' line)",
    )
    p.add_argument(
        "--timestep",
        type=float,
        metavar="PS",
        help="MD timestep in ps: dump time = step × timestep (default: the log's timestep command)",
    )
    p.add_argument(
        "--frame-interval",
        type=float,
        metavar="PS",
        help="ps between frames of extxyz/ASE files whose frames carry no 'time' or 'step'",
    )
    p.add_argument(
        "--blocks", type=int, default=5, metavar="N", help="blocks (>= 2) for the statistical errors (default 5)"
    )
    p.add_argument(
        "--discard",
        type=float,
        default=0.0,
        metavar="PS",
        help="leave out the first PS ps of frames and thermo rows (equilibration; default 0)",
    )
    p.add_argument("--r-max", type=float, default=6.0, metavar="A", help="largest r of g(r) and c(r), Å (default 6)")
    p.add_argument("--rdf-bins", type=int, default=120, metavar="N", help="bins of g(r) (default 120)")
    p.add_argument("--dipole-bins", type=int, default=30, metavar="N", help="bins of c_L(r), c_T(r) (default 30)")
    p.add_argument(
        "--orientation-bins",
        type=int,
        nargs=2,
        default=(8, 16),
        metavar=("NCOS", "NPHI"),
        help="bins of F(cos θ, φ) (default 8 16)",
    )
    p.add_argument(
        "--max-lag", type=float, default=10.0, metavar="PS", help="longest lag of the MSD and c_uu (default 10 ps)"
    )
    p.add_argument(
        "--fit",
        type=float,
        nargs=2,
        metavar=("START", "END"),
        help="MSD lag range fitted for D, ps (default: 20%%–100%% of the block length or of the largest lag)",
    )
    p.add_argument("--json", action="store_true", help="print observables.json instead of the summary")
    p.set_defaults(func=_observables)

    p = sub.add_parser(
        "replicas",
        help="merge the observables of independent replicas of one simulation",
        description="One observables folder from those of independent replicas of one simulation (own "
        "starting configuration or velocities; folders written by `petmd observables`, analysed with the same "
        "options): each value is the mean over the replicas, its error the larger of their spread (standard "
        "error of the mean) and their block errors combined, with as many degrees of freedom as replicas. For "
        "slow observables one trajectory samples once, the spread is the honest error. `petmd compare` reads "
        "the result like any run's.",
    )
    p.add_argument("runs", nargs="+", metavar="DIR", help="folders holding observables.json, one per replica")
    p.add_argument("-o", "--output", required=True, help="folder for the merged observables.json, CSV and PNG")
    p.add_argument("--json", action="store_true", help="print the merged observables.json instead of the summary")
    p.set_defaults(func=_replicas)

    p = sub.add_parser(
        "compare",
        help="compare observables of several runs with statistical errors",
        description="Compare the observables of runs (folders written by `petmd observables`): "
        "for each observable all runs have, the difference to the first run, the "
        "combined error, a z-score and a verdict, overlay plots and one Markdown report. "
        "Runs of different temperature, density or composition are refused unless "
        "--force.",
    )
    p.add_argument(
        "runs", nargs="+", metavar="DIR", help="folders holding observables.json (the first is the reference)"
    )
    p.add_argument(
        "-o",
        "--output",
        required=True,
        metavar="REPORT",
        help="folder for report.md, compare.json and the overlay PNGs (or a path ending in .md)",
    )
    p.add_argument("--names", nargs="+", help="labels of the runs in the report (default: folder names)")
    p.add_argument(
        "--threshold",
        type=float,
        default=3.0,
        metavar="Z",
        help="verdict 'differs' when the difference is beyond this many standard errors, i.e. p below "
        "the two-sided normal tail at that z (default 3: p < 0.0027)",
    )
    p.add_argument("--force", action="store_true", help="compare runs even if their conditions differ")
    p.add_argument("--json", action="store_true", help="print the comparison as JSON")
    p.set_defaults(func=_compare)
    return parser


# the commands that evaluate or train models (observables and compare only read files)
MODEL_COMMANDS = {"train", "eval", "symmetry", "export"}


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.command in MODEL_COMMANDS:
        from .cpu import flush_subnormals

        flush_subnormals()
    try:
        return args.func(args)
    except PetmdError as err:
        print(f"petmd {args.command}: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        if err.filename is None:  # not about a file the user named: petmd's own failure
            return _report_bug(args.command)
        # a missing, unreadable or unwritable file or folder, a full disk
        hint = " (a file stands where a folder is needed)" if isinstance(err, FileExistsError) else ""
        print(f"petmd {args.command}: error: cannot use {err.filename}: {err.strerror}{hint}", file=sys.stderr)
        return 2
    except Exception:
        return _report_bug(args.command)


def _report_bug(command: str) -> int:
    """A failure no check foresaw is petmd's, not the user's: the traceback, and a line saying so."""
    traceback.print_exc()
    print(
        f"petmd {command}: this is a bug in petmd, not a mistake in the input: please report it with the command "
        "line and the traceback above",
        file=sys.stderr,
    )
    return 1


if __name__ == "__main__":
    sys.exit(main())
