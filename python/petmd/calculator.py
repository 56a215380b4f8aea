"""An ASE calculator for a petmd checkpoint or exported model."""

from __future__ import annotations

from ase.calculators.calculator import Calculator, PropertyNotImplementedError, all_changes
from ase.stress import full_3x3_to_voigt_6_stress

from .batch import frame_from_atoms
from .data import check_species
from .errors import PetmdError
from .loading import load_model


class PETCalculator(Calculator):
    """Energy, forces, stress (periodic cells) and per-atom energies from a PET model; with a model exported with
    ``--uncertainty``, also ``energy_uncertainty`` (σ of the energy, eV) and ``atom_extrapolation`` (each atom's
    extrapolation score γ_i: 1 for a typical atom of the validation frames, ≫ 1 for an environment unlike the
    training data's; docs/uncertainty.md).

    Runs the model through its exported interface (the same one LAMMPS uses), so a checkpoint and its exported
    file give the same numbers. ``uncertainty``: None computes the uncertainties when the model has a calibration,
    True requires one (an error naming the fix otherwise), False never computes them.
    """

    implemented_properties = [
        "energy",
        "free_energy",
        "forces",
        "stress",
        "energies",
        "energy_uncertainty",
        "atom_extrapolation",
    ]

    def __init__(self, model, uncertainty: bool | None = None, **kwargs):
        super().__init__(**kwargs)
        self.model = load_model(model) if not hasattr(model, "metadata") else model
        if uncertainty is None:
            uncertainty = self.model.has_uncertainty
        if uncertainty:
            self.model.require_uncertainty("PETCalculator")
        if self.model.has_uncertainty:  # a module without a calibration may predate set_uncertainty
            self.model.set_uncertainty(uncertainty)
        self.uncertainty = uncertainty

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        atoms = self.atoms
        check_species(atoms.numbers, self.model.atomic_numbers, "PETCalculator")
        try:
            frame = frame_from_atoms(atoms, self.model.cutoff)
        except PetmdError as err:
            raise PetmdError(f"PETCalculator: {err}") from None
        out = self.model(frame)
        energy = float(out["energy"].detach())
        self.results["energy"] = energy
        self.results["free_energy"] = energy
        self.results["energies"] = out["energies"].detach().numpy().copy()
        self.results["forces"] = out["forces"].detach().numpy().copy()
        if self.uncertainty:
            self.results["energy_uncertainty"] = float(out["energy_uncertainty"])
            self.results["atom_extrapolation"] = out["atom_extrapolation"].detach().numpy().copy()
        elif "energy_uncertainty" in properties or "atom_extrapolation" in properties:
            raise PropertyNotImplementedError("this PETCalculator was made with uncertainty=False")
        if atoms.cell.rank == 3 and atoms.pbc.all():
            # ASE stress = (1/V) ∂E/∂ε = −W/V; the model's virial W is not exactly symmetric (PET is not
            # rotation invariant), ASE's Voigt form keeps its symmetric part
            virial = out["virial"].detach().numpy()
            stress = -0.5 * (virial + virial.T) / atoms.get_volume()
            self.results["stress"] = full_3x3_to_voigt_6_stress(stress)
        elif "stress" in properties:
            raise PropertyNotImplementedError("stress needs a fully periodic cell")
