"""Training on real water data gets off the zero-force plateau (guards the loss units and the geometry init)."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import yaml

from conftest import run_petmd

TINY_CONFIG = Path(__file__).resolve().parent / "models" / "pet-water-tiny.yaml"


@pytest.mark.slow
def test_forces_learn_on_scan_water(tmp_path, scan_data_path):
    cfg = yaml.safe_load(TINY_CONFIG.read_text())
    cfg["data"]["path"] = str(scan_data_path)
    cfg["training"]["epochs"] = 4
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    run_petmd("train", path, "-o", tmp_path / "run", "--no-progress", check=True)
    rows = list(csv.DictReader(open(tmp_path / "run" / "metrics.csv")))
    force_mae = [float(r["val_force_mae_mev_per_A"]) for r in rows]
    # predicting zero forces gives ≈ 575 meV/Å on these validation frames; PyTorch's default init of the
    # geometry embedding, or an energy term normalised by the energy spread, stayed there
    assert min(force_mae) < 400.0, force_mae
    assert force_mae[-1] < force_mae[0]
