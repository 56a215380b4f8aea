"""The command line every example script shares: --model (an exported model, checked to exist) and -o/--output."""

from __future__ import annotations

import argparse
from pathlib import Path


def example_parser(doc: str, here: Path) -> argparse.ArgumentParser:
    """An argument parser for examples/NAME/run.py (``here`` = that folder) with --model and -o/--output."""
    root = here.parents[1]
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--model",
        type=Path,
        default=root / "models" / "pet-water-small.pt",
        help="exported model (default models/pet-water-small.pt; models/pet-water.pt is the production model)",
    )
    parser.add_argument("-o", "--output", type=Path, default=here / "output")
    return parser


def parse_example_args(parser: argparse.ArgumentParser, argv=None) -> argparse.Namespace:
    """Parse; a missing model is a usage error naming the file; the output folder is created."""
    args = parser.parse_args(argv)
    if not args.model.exists():
        parser.error(f"model {args.model} does not exist (models/ holds the shipped ones)")
    args.output.mkdir(parents=True, exist_ok=True)
    return args
