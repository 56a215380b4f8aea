"""The exported file: a self-contained TorchScript module with the LAMMPS-friendly interface of
docs/model-interface.md (``ExportedPET``) and the metadata it carries (``build_metadata``). `petmd export`
(petmd.export) writes it; petmd.loading reads it, and the C++ bridge (cpp/model.cpp)."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Dict, List, Optional, Tuple

import torch
from ase.data import chemical_symbols
from torch import nn

from . import __version__
from .model import PET
from .neighbors import reverse_edge_index
from .rotations import named_grid, random_o3, rotate, rotate_back

FORMAT = "petmd-model"
# The interface's version, which the C++ bridge checks too (kFormatVersion in cpp/model.cpp); it changes whenever the
# file's methods or metadata change. 1: files from before 2026-12-04, some without methods added since (message
# exchange, set_chunk_atoms, ECSE); 2: the interface of docs/model-interface.md as of 2026-12-04; 3: adds
# set_correction (the slow term of multiple time stepping); 4: adds the uncertainty (set_uncertainty,
# energy_uncertainty, has_uncertainty; the uncertainty_metric buffer and the metadata's "uncertainty"). Version 3
# files still load: they have the interface of version 4 less the uncertainty, and say so when asked for one.
FORMAT_VERSION = 4
OLDEST_FORMAT_VERSION = 3
METADATA_FILE = "petmd.json"
# rotated copies evaluated per network call (grid modes, evaluate_grid): at most this many nodes, at least one copy
COPY_NODES_PER_CALL = 2048


class ExportedPET(nn.Module):
    """The exported interface: one system (local atoms and any ghosts) with an explicit edge list.

    ``symmetrize`` picks what forward returns: ``none`` (the network as trained), ``grid:G`` (the weighted average over
    the rotation grid G, forces and virial rotated back; all grid elements in one batched call), ``random`` (the
    network on the system rotated by a fresh random O(3) element each call, outputs rotated back; torch's global
    generator, so ``torch.manual_seed`` makes it reproducible) or ``ecse`` (exact symmetrization in each atom's local
    frames, model/ecse.py). ``set_symmetrization`` changes it at run time. ``set_correction(True)`` makes forward
    return (that mode − the network as trained) instead: the slow term of multiple time stepping.

    ``uncertainty_metric`` [D, D]: M = α² (C + ς² I)⁻¹ of the last-layer prediction rigidity, and
    ``extrapolation_metric`` [D, D] L, the per-atom score's (petmd.uncertainty); None for a model without uncertainty.
    ``set_uncertainty(True)`` makes forward also return the uncertainty of the prediction of the current mode (with
    the correction on: of the symmetrized prediction)."""

    def __init__(
        self,
        pet: PET,
        symmetrize: str = "none",
        uncertainty_metric: Optional[torch.Tensor] = None,
        extrapolation_metric: Optional[torch.Tensor] = None,
    ):
        super().__init__()
        self.pet = pet
        self.symmetrize = "none"
        self.correction = False
        self.uncertainty = False
        if uncertainty_metric is None or extrapolation_metric is None:
            uncertainty_metric = extrapolation_metric = torch.zeros(0, 0, dtype=torch.float64)
        self.register_buffer("uncertainty_metric", uncertainty_metric.to(torch.float64))
        self.register_buffer("extrapolation_metric", extrapolation_metric.to(torch.float64))
        self.copy_nodes_per_call = COPY_NODES_PER_CALL
        self.register_buffer("grid_rotations", torch.eye(3, dtype=torch.float64).unsqueeze(0))
        self.register_buffer("grid_weights", torch.ones(1, dtype=torch.float64))
        self.set_symmetrization(symmetrize)

    @torch.jit.export
    def set_symmetrization(self, mode: str) -> None:
        if mode.startswith("grid:"):
            rotations, weights = named_grid(mode[5:])
            self.grid_rotations = rotations.to(self.grid_rotations.device)
            self.grid_weights = weights.to(self.grid_weights.device)
        elif mode != "none" and mode != "random" and mode != "ecse":
            raise RuntimeError(
                "unknown symmetrization '" + mode + "': use none, random, grid:G (e.g. grid:2i; `grid 2i` in "
                "pair_style pet) or ecse"
            )
        if mode == "none" and self.correction:
            raise RuntimeError(_no_correction())
        self.symmetrize = mode

    @torch.jit.export
    def set_correction(self, on: bool) -> None:
        """With ``on``, forward returns (symmetrized − as trained) in the current mode: energy, energies, forces and
        virial of the difference, from one batched evaluation for grid:G and random (the plain copy rides along
        with weight −1), from two for ecse."""
        if on and self.symmetrize == "none":
            raise RuntimeError(_no_correction())
        self.correction = on

    @torch.jit.export
    def has_uncertainty(self) -> bool:
        return self.uncertainty_metric.numel() > 0

    @torch.jit.export
    def set_uncertainty(self, on: bool) -> None:
        """With ``on``, forward also returns ``uncertainty_features`` [D] (the summed last-layer features of the
        masked atoms), ``energy_uncertainty`` (σ of the energy, eV, from those; across MPI ranks: energy_uncertainty
        of the features summed over ranks) and ``atom_extrapolation`` [n] (each masked atom's extrapolation score
        γ_i, 1 for a typical validation atom; 0 for the others), at the cost of summing the heads' hidden
        activations per atom and a quadratic form per atom."""
        if on and not self.has_uncertainty():
            raise RuntimeError(_no_uncertainty())
        self.uncertainty = on

    @torch.jit.export
    def energy_uncertainty(self, features: torch.Tensor) -> torch.Tensor:
        """σ = sqrt(Fᵀ M F) (eV) of summed last-layer features F [D] (or one σ per row of F [S, D])."""
        return self._root_quadratic_form(features, self.uncertainty_metric)

    @torch.jit.export
    def atom_extrapolation(self, features: torch.Tensor) -> torch.Tensor:
        """γ_i = sqrt(f_iᵀ L f_i) of per-atom last-layer features [n, D]."""
        return self._root_quadratic_form(features, self.extrapolation_metric)

    def _root_quadratic_form(self, features: torch.Tensor, metric) -> torch.Tensor:
        """sqrt(fᵀ metric f) of each row f of ``features`` (round-off below 0 clamped). ``metric`` is a buffer,
        unannotated: TorchScript takes it for the Tensor it is, the type checker sees buffers as Tensor | Module."""
        if not self.has_uncertainty():
            raise RuntimeError(_no_uncertainty())
        f = features.to(torch.float64)
        return torch.sqrt(torch.clamp(((f @ metric) * f).sum(-1), min=0.0))

    @torch.jit.export
    def set_chunk_atoms(self, n: int) -> None:
        """Evaluate systems of more than ``n`` atoms in chunks of ``n`` with recomputation (memory bounded by the
        chunk; one more forward pass of compute); 0 = never, -1 = the default of the device (CPU 128, GPU 4096)."""
        if n < -1:
            raise RuntimeError(
                "the chunk size must be at least 0 atoms (0: never chunk; -1: the device's default), got " + str(n)
            )
        self.pet.chunk_atoms = n

    def forward(
        self,
        positions: torch.Tensor,  # [n, 3] float64, Å: all atoms the edges refer to (local + ghosts)
        atomic_numbers: torch.Tensor,  # [n] int64
        cell: torch.Tensor,  # [3, 3] float64, rows = cell vectors (zeros when there are no periodic shifts)
        edge_index: torch.Tensor,  # [2, E] int64: full, symmetric list of pairs i→j within the cutoff
        cell_shifts: torch.Tensor,  # [E, 3] int64: x_ij = r_j − r_i + S·cell
        energy_mask: torch.Tensor,  # [n] bool: atoms whose energies are summed (LAMMPS: local atoms)
    ) -> Dict[str, torch.Tensor]:
        positions = positions.to(torch.float64)
        ecse = self.symmetrize == "ecse"
        rotations, weights = self._mode_rotations()
        result = self._average(
            positions,
            atomic_numbers,
            cell,
            edge_index,
            cell_shifts,
            energy_mask,
            rotations,
            weights,
            ecse,
            self.uncertainty,
        )[0]
        uncertainty: Dict[str, torch.Tensor] = {}
        if self.uncertainty:
            uncertainty = self._uncertainties(result.pop("features"))
        if self.correction and ecse:  # ECSE acts inside the network: the plain network is a second evaluation
            plain = self._average(
                positions, atomic_numbers, cell, edge_index, cell_shifts, energy_mask, rotations, weights, False
            )[0]
            result = {key: result[key] - plain[key] for key in result}
        result.update(uncertainty)
        return result

    def _uncertainties(self, atom_features: torch.Tensor) -> Dict[str, torch.Tensor]:
        """What set_uncertainty adds to forward's result, from per-atom features [n, D]."""
        summed = atom_features.sum(0)
        return {
            "uncertainty_features": summed,
            "energy_uncertainty": self.energy_uncertainty(summed),
            "atom_extrapolation": self.atom_extrapolation(atom_features),
        }

    @torch.jit.export
    def evaluate_grid(
        self,
        positions: torch.Tensor,
        atomic_numbers: torch.Tensor,
        cell: torch.Tensor,
        edge_index: torch.Tensor,
        cell_shifts: torch.Tensor,
        energy_mask: torch.Tensor,
        grid: str,
    ) -> Dict[str, torch.Tensor]:
        """The network as trained against its average over ``grid`` (for on-the-fly symmetry diagnostics):
        ``energy``/``forces`` of the plain network, ``grid_energies`` [K] (masked energy of each rotated copy),
        ``grid_weights`` [K], ``grid_forces`` [n, 3] (weighted mean of the back-rotated forces)."""
        positions = positions.to(torch.float64)
        rotations, weights = named_grid(grid)
        rotations, weights = rotations.to(positions.device), weights.to(positions.device)
        identity, one = _identity(positions.device)
        plain = self._average(
            positions, atomic_numbers, cell, edge_index, cell_shifts, energy_mask, identity, one, False
        )[0]
        averaged, grid_energies = self._average(
            positions, atomic_numbers, cell, edge_index, cell_shifts, energy_mask, rotations, weights, False
        )
        return {
            "energy": plain["energy"].detach(),
            "forces": plain["forces"],
            "grid_energies": grid_energies.detach(),
            "grid_weights": weights,
            "grid_forces": averaged["forces"],
        }

    def _average(
        self,
        positions: torch.Tensor,
        atomic_numbers: torch.Tensor,
        cell: torch.Tensor,
        edge_index: torch.Tensor,
        cell_shifts: torch.Tensor,
        energy_mask: torch.Tensor,
        rotations: torch.Tensor,
        weights: torch.Tensor,
        ecse: bool,
        with_features: bool = False,
    ) -> Tuple[Dict[str, torch.Tensor], torch.Tensor]:
        """Weighted average over copies of the system rotated by ``rotations`` (row vectors: x → x Qᵀ), outputs
        rotated back; and the energy of each copy. ``with_features``: also ``features`` [n, D], the average of the
        per-atom last-layer features over the copies of positive weight (those of the symmetrized prediction when
        the correction's identity copy of weight −1 rides along). Copies are batched up to copy_nodes_per_call nodes
        per network call: one call over all copies of a large system costs ~2.5× more than the same work in small
        calls (measured on 768 atoms × 18 copies, CPU), from fresh large allocations."""
        n_atoms = positions.shape[0]
        n_edges = edge_index.shape[1]
        reverse = reverse_edge_index(edge_index, cell_shifts, n_atoms)
        shift_vectors = torch.matmul(cell_shifts.to(torch.float64), cell.to(torch.float64))
        n_copies = rotations.shape[0]
        per_call = max(1, self.copy_nodes_per_call // max(n_atoms, 1))
        energy = torch.zeros((), dtype=torch.float64, device=positions.device)
        energies = torch.zeros(n_atoms, dtype=torch.float64, device=positions.device)
        forces = torch.zeros(n_atoms, 3, dtype=torch.float64, device=positions.device)
        virial = torch.zeros(3, 3, dtype=torch.float64, device=positions.device)
        n_features = self.pet.features_per_layer * self.pet.n_gnn_layers if with_features else 0
        features = torch.zeros(n_atoms, n_features, dtype=torch.float64, device=positions.device)
        copy_energies: List[torch.Tensor] = []
        for first in range(0, n_copies, per_call):
            rot = rotations[first : first + per_call]
            w = weights[first : first + per_call]
            k = rot.shape[0]
            copies = torch.arange(k, device=positions.device)
            out = self.pet(
                rotate(positions.unsqueeze(0), rot).reshape(-1, 3),
                atomic_numbers.repeat(k),
                (edge_index.unsqueeze(1) + (copies * n_atoms).view(1, k, 1)).reshape(2, -1),
                rotate(shift_vectors.unsqueeze(0), rot).reshape(-1, 3),
                (reverse.unsqueeze(0) + (copies * n_edges).view(k, 1)).reshape(-1),
                copies.repeat_interleave(n_atoms),
                k,
                energy_mask=energy_mask.repeat(k),
                compute_forces=True,
                compute_virial=True,
                create_graph=False,
                ecse=ecse,
                compute_features=with_features,
            )
            if with_features:
                positive = torch.clamp(w, min=0.0).view(k, 1, 1)
                features = features + (positive * out["features"].view(k, n_atoms, n_features)).sum(0)
            back = rotate_back(out["forces"].view(k, n_atoms, 3), rot)
            energy = energy + (w * out["energy"]).sum()
            energies = energies + (w.unsqueeze(1) * out["energies"].view(k, n_atoms)).sum(0)
            forces = forces + (w.view(k, 1, 1) * back).sum(0)
            virial = virial + (w.view(k, 1, 1) * torch.einsum("kab,kac,kcd->kbd", rot, out["virial"], rot)).sum(0)
            copy_energies.append(out["energy"])
        result = {"energy": energy, "energies": energies, "forces": forces, "virial": virial}
        if with_features:
            result["features"] = features
        return result, torch.cat(copy_energies)

    # --- message exchange across MPI ranks: the layer-by-layer interface of docs/model-interface.md §14 ---------

    @torch.jit.export
    def message_width(self) -> int:
        """d: the width of the edge tokens that ranks exchange between layers."""
        return self.pet.neighbor_embedding.weight.shape[1]

    @torch.jit.export
    def message_rotations(self) -> Tuple[torch.Tensor, torch.Tensor]:
        """The rotated copies the current mode averages over ([K, 3, 3] acting on row vectors as x Qᵀ, weights [K]):
        the identity for none, one fresh random O(3) element for random (torch's global generator: seed it the same
        on every rank), the grid for grid:G. ECSE works inside each layer and cannot be run layer by layer here."""
        if self.symmetrize == "ecse":
            raise RuntimeError("symmetrize ecse cannot exchange messages between ranks layer by layer")
        return self._mode_rotations()

    def _mode_rotations(self) -> Tuple[torch.Tensor, torch.Tensor]:
        """Rotations [K, 3, 3] and weights [K] of the current mode: the identity (exact in floating point) for none
        and ecse (which symmetrizes inside the network), a fresh random O(3) element for random, the grid for
        grid:G; with the correction on (grid:G, random), the identity is appended with weight −1."""
        device = self.grid_weights.device
        if self.symmetrize == "none" or self.symmetrize == "ecse":
            return _identity(device)
        if self.symmetrize == "random":
            rotations = random_o3(torch.float64, device).unsqueeze(0)
            weights = torch.ones(1, dtype=torch.float64, device=device)
        else:
            rotations, weights = self.grid_rotations, self.grid_weights
        if self.correction:
            identity, one = _identity(device)
            rotations, weights = torch.cat([rotations, identity]), torch.cat([weights, -one])
        return rotations, weights

    @torch.jit.export
    def message_grid(self, grid: str) -> Tuple[torch.Tensor, torch.Tensor]:
        """Rotations and weights of the named grid (for on-the-fly symmetry diagnostics)."""
        rotations, weights = named_grid(grid)
        return rotations.to(self.grid_weights.device), weights.to(self.grid_weights.device)

    @torch.jit.export
    def message_layer(
        self,
        layer: int,
        atomic_numbers: torch.Tensor,
        neighbor_numbers: torch.Tensor,
        edge_i: torch.Tensor,
        edge_vectors: torch.Tensor,
        messages: torch.Tensor,
    ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """The network as trained, one layer (rotated copies: rotate edge_vectors, see message_rotations); the
        fourth element: the layer's last-layer features [n, D / n_gnn_layers] with set_uncertainty on, else empty."""
        return self.pet.message_layer(
            layer, atomic_numbers, neighbor_numbers, edge_i, edge_vectors, messages, self.uncertainty
        )

    @torch.jit.export
    def message_layer_backward(
        self,
        layer: int,
        atomic_numbers: torch.Tensor,
        neighbor_numbers: torch.Tensor,
        edge_i: torch.Tensor,
        edge_vectors: torch.Tensor,
        messages: torch.Tensor,
        output_adjoint: torch.Tensor,
    ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        # gradient recording must be on (§7)
        return self.pet.message_layer_backward(
            layer, atomic_numbers, neighbor_numbers, edge_i, edge_vectors, messages, output_adjoint, self.uncertainty
        )

    @torch.jit.export
    def message_result(
        self,
        atomic_numbers: torch.Tensor,
        layer_energies: torch.Tensor,
        edge_index: torch.Tensor,
        edge_vectors: torch.Tensor,
        gradient: torch.Tensor,
        n_all: int,
    ) -> Dict[str, torch.Tensor]:
        result = self.pet.message_result(atomic_numbers, layer_energies, edge_index, edge_vectors, gradient, n_all)
        if self.correction:
            # the layer energies are already weighted (sum of the weights: 0); the composition baseline that
            # message_result adds once cancels in the difference
            species = self.pet.species_index(atomic_numbers)
            energies = result["energies"] - self.pet.composition_energies.index_select(0, species)
            result["energies"] = energies
            result["energy"] = energies.sum()
        return result

    @torch.jit.export
    def batched(
        self,
        positions: torch.Tensor,
        atomic_numbers: torch.Tensor,
        edge_index: torch.Tensor,
        shift_vectors: torch.Tensor,
        reverse: torch.Tensor,
        structure: torch.Tensor,
        n_structures: int,
        compute_virial: bool,
        with_uncertainty: bool = False,
    ) -> Dict[str, torch.Tensor]:
        """Several disconnected structures at once (Python-side evaluation; see petmd.batch.collate): the network,
        with ECSE when that is the mode (it acts per atom), without the rotation averaging of grid:G and random.
        ``with_uncertainty``: also energy_uncertainty [n_structures] and atom_extrapolation [N] (set_uncertainty)."""
        if with_uncertainty and not self.has_uncertainty():
            raise RuntimeError(_no_uncertainty())
        out = self.pet(
            positions,
            atomic_numbers,
            edge_index,
            shift_vectors,
            reverse,
            structure,
            n_structures,
            energy_mask=None,
            compute_forces=True,
            compute_virial=compute_virial,
            create_graph=False,
            ecse=self.symmetrize == "ecse",
            compute_features=with_uncertainty,
        )
        if with_uncertainty:
            features = out.pop("features")
            summed = torch.zeros(n_structures, features.shape[1], dtype=torch.float64, device=features.device)
            out["energy_uncertainty"] = self.energy_uncertainty(summed.index_add(0, structure, features))
            out["atom_extrapolation"] = self.atom_extrapolation(features)
        return out


def _no_uncertainty() -> str:
    return (
        "this model has no uncertainty calibration: export it with `petmd export CHECKPOINT -o MODEL.pt "
        "--uncertainty` (docs/uncertainty.md)"
    )


def _no_correction() -> str:
    return (
        "the correction is (symmetrized − as trained) and the mode is none, so it would be zero: give symmetrize "
        "grid G, random or ecse with correction yes"
    )


def _identity(device: torch.device) -> Tuple[torch.Tensor, torch.Tensor]:
    return (
        torch.eye(3, dtype=torch.float64, device=device).unsqueeze(0),
        torch.ones(1, dtype=torch.float64, device=device),
    )


def build_metadata(pet: PET, config: dict, dtype: str, extra: Optional[dict] = None, symmetrize: str = "none") -> dict:
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "species": [chemical_symbols[z] for z in pet.atomic_numbers],
        "atomic_numbers": list(pet.atomic_numbers),
        "cutoff": pet.cutoff,
        "cutoff_width": pet.cutoff_width,
        "interaction_range": pet.n_gnn_layers * pet.cutoff,
        "n_gnn_layers": pet.n_gnn_layers,
        "dtype": dtype,
        "units": "metal",
        "symmetrize": symmetrize,
        "hyperparameters": config["model"],
        "petmd_version": __version__,
        "torch_version": torch.__version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "citation": "Pozdnyakov & Ceriotti, NeurIPS 2023 (PET); petmd",
        **(extra or {}),
    }
