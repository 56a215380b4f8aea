"""The `petmd` command line: argument parsing and dispatch only."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .errors import PetmdError


def _train(args) -> int:
    from .train import summary_table, train_from_config

    result = train_from_config(args.config, args.output, resume=args.resume, max_time=args.max_time,
                               progress=not args.no_progress)
    if args.json:
        print(json.dumps({k: v for k, v in result.items() if k != "history"} | {"history": result["history"]}))
    else:
        print(summary_table(result))
    return 0


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
    result = evaluate(args.model, args.data, args.energy_key, args.forces_key, indices=indices,
                      progress=not args.json)
    print(json.dumps(result, indent=1) if args.json else format_table(result))
    return 0


def _export(args) -> int:
    from .export import export_checkpoint

    meta = export_checkpoint(args.checkpoint, args.output, dtype=args.dtype, symmetrize=args.symmetrize)
    if args.weights_checkpoint:
        from .checkpoint import load_checkpoint, save_weights_only

        save_weights_only(load_checkpoint(args.checkpoint), args.weights_checkpoint)
    if args.json:
        print(json.dumps(meta))
    else:
        print(f"exported {args.checkpoint} → {args.output} ({meta['dtype']}, species {' '.join(meta['species'])}, "
              f"cutoff {meta['cutoff']} Å, interaction range {meta['interaction_range']} Å, "
              f"symmetrize {meta['symmetrize']})")
    return 0


def _symmetry(args) -> int:
    from .symmetry import format_table, symmetry_error, write_report

    indices = _read_indices(args.indices) if args.indices else None
    if args.stride < 1:
        raise PetmdError(f"--stride must be at least 1, got {args.stride}")
    result = symmetry_error(args.model, args.data, grid=args.grid, indices=indices, stride=args.stride,
                            max_frames=args.max_frames, atoms_per_batch=args.atoms_per_batch, seed=args.seed,
                            progress=not args.json, symmetrize=args.symmetrize)
    written = write_report(result, args.output) if args.output else []
    if args.json:
        print(json.dumps({k: v for k, v in result.items() if k != "frames"}, indent=1))
    else:
        print(format_table(result))
        for path in written:
            print(f"wrote {path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="petmd", description="Train, evaluate and export PET potentials.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train a PET model from a YAML config",
                       description="Train PET on energies and forces (extxyz) with random O(3) augmentation.")
    p.add_argument("config", help="YAML config (sections model, data, training)")
    p.add_argument("-o", "--output", default="run", help="output directory (checkpoints, metrics.csv)")
    p.add_argument("--resume", action="store_true", help="continue from OUTPUT/last.ckpt")
    p.add_argument("--max-time", type=float, default=None, metavar="SECONDS",
                   help="stop cleanly (checkpoint written) after this many seconds")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--json", action="store_true", help="print the final summary as JSON")
    p.set_defaults(func=_train)

    p = sub.add_parser("eval", help="energy/force errors of a model on a data file",
                       description="Energy (meV/atom) and force (meV/Å) errors, overall and by config_type/phase.")
    p.add_argument("model", help="checkpoint (.ckpt) or exported model (.pt)")
    p.add_argument("data", help="labelled structures (extxyz or any ASE format)")
    p.add_argument("--energy-key", default="energy")
    p.add_argument("--forces-key", default="forces")
    p.add_argument("--indices", help="JSON list of frame indices to use, or a training run's split.json")
    p.add_argument("--json", action="store_true", help="print the figures as JSON")
    p.set_defaults(func=_eval)

    p = sub.add_parser("symmetry", help="symmetry error: plain model vs its average over a rotation grid",
                       description="How far a model is from rotation invariant: per frame, the plain energy and "
                                   "forces against their average over a rotation grid (forces rotated back), and "
                                   "the spread over the grid; summarised by config_type/phase.")
    p.add_argument("model", help="checkpoint (.ckpt) or exported model (.pt)")
    p.add_argument("data", help="structures (extxyz or any ASE format; labels not needed)")
    p.add_argument("--grid", default="3i", help="0, i, L or Li (L >= 1, e.g. 2, 2i, 3i) or random:K (default 3i)")
    p.add_argument("--indices", help="JSON list of frame indices to use, or a training run's split.json")
    p.add_argument("--stride", type=int, default=1, help="use every N-th frame (default 1)")
    p.add_argument("--max-frames", type=int, default=None, help="use at most this many frames")
    p.add_argument("--atoms-per-batch", type=int, default=2000,
                   help="atoms per model call: rotated copies of a frame are batched up to this; memory grows with "
                        "it (study-size model: ~3 MiB/atom) (default 2000)")
    p.add_argument("--seed", type=int, default=0, help="seed of random:K grids")
    p.add_argument("--symmetrize", default=None, metavar="MODE",
                   help="evaluate the model in this mode (none, random, grid:G, ecse) instead of the one stored in it")
    p.add_argument("-o", "--output", help="folder for symmetry.json, frames.csv and symmetry-histogram.png")
    p.add_argument("--json", action="store_true", help="print the figures as JSON")
    p.set_defaults(func=_symmetry)

    p = sub.add_parser("export", help="export a checkpoint to TorchScript",
                       description="Write a self-contained TorchScript model (see docs/model-interface.md).")
    p.add_argument("checkpoint")
    p.add_argument("-o", "--output", required=True, help="output file, e.g. model.pt")
    p.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    p.add_argument("--symmetrize", default="none", metavar="MODE",
                   help="what the model returns by default: none (as trained), random (a random O(3) rotation per "
                        "call), grid:G (average over rotation grid G, e.g. grid:2i) or ecse (exact symmetrization in "
                        "local frames, docs/symmetry.md); pair_style pet can override it (default none)")
    p.add_argument("--weights-checkpoint", metavar="PATH",
                   help="also write the checkpoint's weights, config and history without optimizer state to PATH "
                        "(what models/ ships next to an exported model)")
    p.add_argument("--json", action="store_true", help="print the metadata as JSON")
    p.set_defaults(func=_export)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except PetmdError as err:
        print(f"petmd {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
