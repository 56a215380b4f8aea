#!/usr/bin/env python
"""Can torch.func (jvp, grad) replace the hand-written tangents of python/petmd/model/tangents.py?

One GNN layer (layers[1]: its input messages have tangents and it embeds the neighbour species) over all atoms of a
SCAN water frame, as one chunk of petmd.model.training_gradient. "hand" = tangents.on_atoms; "jvp" = torch.func.jvp
of GNNLayer.on_atoms with the edge geometry inside, so the tangent enters through the edge vectors and the messages.
1. float64: energy and output-token tangents, hand against jvp (max abs difference).
2. float64: the gradient of S = Σ ė + Σ ȯ·R (R fixed, random) with respect to the layer's parameters, its input
   messages, their tangents and the neighbour embedding, each way against the plain double backward (max relative
   error over tensors). "composite LN" runs nn.LayerNorm as mean/variance arithmetic instead of the fused kernel.
3. float32: best-of-repeats times, the variants interleaved in every round (a slow spell of a shared machine hits
   all alike); peak RSS increase of one call of each variant, each in a child process of its own (VmHWM reset
   after setup), so that no variant inherits another's heap.

    python benchmarks/forward_mode.py --threads 1 --model-size study --atoms 192
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import time

import torch
from torch import nn
from torch.func import functional_call, grad, jvp

from machine import metadata  # benchmarks/machine.py
from petmd.batch import collate, frame_from_atoms
from petmd.helpers.structures import liquid_water
from petmd.model import PET, tangents
from petmd.model.graph import atom_chunks
from train_throughput import MODEL_SIZES, current_rss_mib, release_memory, reset_peak_rss

HAND_FORWARD, HAND_STEP = "hand tangents forward", "hand tangents + backward"
FUNC_STEPS = ["jvp + autograd.grad", "torch.func.grad(jvp)"]
STEPS = [HAND_STEP, *FUNC_STEPS, *(f"{name}, composite LN" for name in FUNC_STEPS)]


class OnAtoms(nn.Module):
    """GNNLayer.on_atoms of float64 edge vectors with the geometry (r, f_c, log f_c) inside, so that jvp carries the
    edge-vector tangent through it; a module, so that functional_call can swap the layer's parameters."""

    def __init__(self, model, layer):
        super().__init__()
        self.layer, self.geometry = layer, model.edge_geometry  # a bound method: the model is no submodule

    def forward(self, edge_vectors, messages, neighbors, species, local_i):
        energies, tokens, _ = self.layer.on_atoms(*self.geometry(edge_vectors), messages, neighbors, species, local_i)
        return energies, tokens


@contextlib.contextmanager
def composite_layer_norm():
    """nn.LayerNorm written as mean and variance: jvp of the fused layer_norm differentiates wrongly (torch 2.13)."""

    def forward(self, x):
        centred = x - x.mean(-1, keepdim=True)
        return centred * torch.rsqrt((centred * centred).mean(-1, keepdim=True) + self.eps) * self.weight + self.bias

    original, nn.LayerNorm.forward = nn.LayerNorm.forward, forward
    try:
        yield
    finally:
        nn.LayerNorm.forward = original


def setup(model_size: str, n_atoms: int, dtype) -> dict:
    torch.manual_seed(0)
    model = PET([1, 8], MODEL_SIZES[model_size])
    with torch.no_grad():  # training starts the heads at zero, which would make every energy tangent zero
        for head in (model.layers[1].central_head, model.layers[1].bond_head):
            head.net[-1].weight.normal_(0.0, 0.1)
            head.net[-1].bias.normal_(0.0, 0.1)
    model = model.to(dtype)
    batch = collate([frame_from_atoms(liquid_water((n_atoms // 192, 1, 1)), model.cutoff)])
    edge_i, edge_j = batch.edge_index
    species = model.species_index(batch.numbers)
    n = species.shape[0]
    (atoms,), (edges,), (local_i,) = atom_chunks(edge_i, torch.ones(n, dtype=torch.bool), n)  # one chunk: all atoms
    moves = torch.randn(n, 3, dtype=torch.float64)  # every atom i moves along G_i: x_ij along G_j − G_i
    edge_tangent = (moves.index_select(0, edge_j) - moves.index_select(0, edge_i)).index_select(0, edges)
    with torch.no_grad():
        neighbors = model.neighbor_embedding(species.index_select(0, edge_j.index_select(0, edges)))
    m, m_t, R = torch.randn(3, edges.shape[0], model.neighbor_embedding.embedding_dim, dtype=torch.float64).to(dtype)
    x = model.edge_vectors(batch.positions, batch.edge_index, batch.shift_vectors).index_select(0, edges)
    s = dict(model=model, layer=model.layers[1], wrapped=OnAtoms(model, model.layers[1]), x=x, x_t=edge_tangent)
    return dict(s, m=m, m_t=m_t, R=R, nb=neighbors, species=species.index_select(0, atoms), local_i=local_i)


def variants(s: dict) -> dict:
    """name → call: forward variants return (energy tangents, token tangents), steps the gradients of S with respect
    to [layer parameters..., messages, their tangents, neighbour embedding] (what training_gradient.py takes)."""
    model, layer, wrapped, species, local_i = (s[k] for k in ("model", "layer", "wrapped", "species", "local_i"))
    params = list(layer.parameters())
    frozen = {"layer." + k: v.detach() for k, v in layer.named_parameters()}

    def hand(m, m_t, nb):
        (_, e_t), (_, o_t) = tangents.on_atoms(model, layer, s["x"], s["x_t"], (m, m_t), nb, species, local_i)
        return e_t, o_t

    def func(m, m_t, nb, weights=None):
        def call(x, m):
            args = (x, m, nb, species, local_i)
            return wrapped(*args) if weights is None else functional_call(wrapped, weights, args)

        return jvp(call, (s["x"], m), (s["x_t"], m_t))[1]

    def objective(tangent_pair):
        return tangent_pair[0].sum() + (tangent_pair[1] * s["R"]).sum()

    def reverse(method):
        def step():
            inputs = [s[k].detach().clone().requires_grad_(True) for k in ("m", "m_t", "nb")]
            return torch.autograd.grad(objective(method(*inputs)), params + inputs, allow_unused=True)

        return step

    def func_grad():
        g = grad(lambda w, *inputs: objective(func(*inputs, weights=w)), argnums=(0, 1, 2, 3))(
            frozen, s["m"], s["m_t"], s["nb"]
        )
        return [g[0]["layer." + k] for k, _ in layer.named_parameters()] + list(g[1:])

    def within(context, f, *args):
        def run():
            with context():
                return f(*args)

        return run

    inputs, no_grad, composite = (s["m"], s["m_t"], s["nb"]), torch.no_grad, composite_layer_norm
    steps = [reverse(hand), reverse(func), func_grad, within(composite, reverse(func)), within(composite, func_grad)]
    return {
        "plain layer forward (no tangent)": within(no_grad, wrapped, s["x"], s["m"], s["nb"], species, local_i),
        HAND_FORWARD: within(no_grad, hand, *inputs),
        "torch.func.jvp forward": within(no_grad, func, *inputs),
        **dict(zip(STEPS, steps)),
    }


def reference(s: dict):
    """∂S/∂(parameters, inputs) by the plain double backward: S = (∂/∂x (Σ e + Σ o·R))·ẋ + (same ∂/∂m)·ṁ."""
    x, m, m_t, nb = [s[k].detach().clone().requires_grad_(True) for k in ("x", "m", "m_t", "nb")]
    e, o = s["wrapped"](x, m, nb, s["species"], s["local_i"])
    g_x, g_m = torch.autograd.grad(e.sum() + (o * s["R"]).sum(), (x, m), create_graph=True)
    S = (g_x * s["x_t"]).sum() + (g_m * m_t).sum()
    return torch.autograd.grad(S, list(s["layer"].parameters()) + [m, m_t, nb], allow_unused=True)


def correctness(model_size: str, n_atoms: int) -> dict:
    s = setup(model_size, n_atoms, torch.float64)
    calls, out = variants(s), {}
    hand_t, func_t = calls[HAND_FORWARD](), calls["torch.func.jvp forward"]()
    out["energy tangent max |hand − jvp|"] = float((hand_t[0] - func_t[0]).abs().max())
    out["token tangent max |hand − jvp|"] = float((hand_t[1] - func_t[1]).abs().max())
    out["tangent scale max |hand|"] = max(float(hand_t[0].abs().max()), float(hand_t[1].abs().max()))
    ref = reference(s)
    names = [k for k, _ in s["layer"].named_parameters()] + ["messages", "messages tangent", "neighbour embedding"]
    for name in STEPS:
        try:
            errors = [(0.0, "")]
            for where, g, r in zip(names, calls[name](), ref):  # None: S does not depend on it (heads' last bias)
                if g is not None or r is not None:
                    g, r = (torch.zeros_like(r) if g is None else g), (torch.zeros_like(g) if r is None else r)
                    errors.append((float((g - r).abs().max()) / max(float(r.abs().max()), 1e-300), where))
            out[f"∂S rel. error: {name}"] = "{:.2e} ({})".format(*max(errors))
        except Exception as exc:  # noqa: BLE001  (a failure is a finding)
            out[f"∂S rel. error: {name}"] = f"failed: {type(exc).__name__}: {str(exc)[:300]}"
    return out


def timings(model_size: str, n_atoms: int, repeats: int) -> dict:
    s = setup(model_size, n_atoms, torch.float32)
    calls, times, failed = variants(s), {}, {}
    for name, call in calls.items():  # warm-up; a variant that fails is timed no further
        try:
            call()
            times[name] = []
        except Exception as exc:  # noqa: BLE001
            failed[name] = f"failed: {type(exc).__name__}: {str(exc)[:200]}"
    for _ in range(repeats):
        for name in times:
            t0 = time.perf_counter()
            calls[name]()
            times[name].append(time.perf_counter() - t0)
    sizes = dict(atoms=s["species"].shape[0], edges=s["local_i"].shape[0])
    parameters = sum(p.numel() for p in s["layer"].parameters())
    return dict(sizes, best_s={k: min(v) for k, v in times.items()}, failed=failed, parameters=parameters)


def peak_rss_increase(model_size: str, n_atoms: int, name: str):
    """(In a child process) VmHWM − VmRSS over one call of the variant, after setup and a reset of VmHWM."""
    s = setup(model_size, n_atoms, torch.float32)
    call = variants(s)[name]
    release_memory()
    baseline = current_rss_mib()
    if baseline is None or not reset_peak_rss():
        return None
    call()
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) / 1024.0 for line in fh if line.startswith("VmHWM:")) - baseline


def child_peak_rss_increase(args, name):
    options = f"--model-size {args.model_size} --atoms {args.atoms} --threads {args.threads}".split()
    cmd = [sys.executable, __file__, "--memory-of", name, *options]
    result = subprocess.run(cmd, capture_output=True, text=True)
    return json.loads(result.stdout) if result.returncode == 0 else None


def verdict(report: dict) -> str:
    """torch.func replaces the hand tangents only if some way of using it is exact, as fast and as small (±10 %)."""
    best, mem, corr, reasons = report["best_s"], report["peak_rss_mib"], report["correctness"], []
    for name in STEPS[1:]:
        error, why = corr[f"∂S rel. error: {name}"], []
        if name not in best or error.startswith("failed"):
            reasons.append(f"{name} fails")
            continue
        if float(error.split()[0]) > 1e-8:
            why.append(f"wrong (rel. error {error.split()[0]})")
        if best[name] > 1.1 * best[HAND_STEP]:
            why.append(f"{best[name] / best[HAND_STEP]:.2f}x the time")
        if mem.get(name) and mem.get(HAND_STEP) and mem[name] > 1.1 * mem[HAND_STEP]:
            why.append(f"{mem[name] / mem[HAND_STEP]:.2f}x the memory")
        if not why:
            return f"torch.func can replace tangents.py: {name} is exact, as fast and as small"
        reasons.append(f"{name}: {', '.join(why)}")
    return "torch.func cannot replace tangents.py: " + "; ".join(reasons)


def table(report: dict) -> str:
    corr = report["correctness"]
    lines = [
        f"{report['model_size']} model, GNN layer 1 on {report['atoms']} atoms / {report['edges']} edges in one "
        f"chunk, {report['parameters']:,} layer parameters, torch {torch.__version__}, {report['threads']} "
        f"thread(s), {report['meta']['cpu']}, {report['meta']['date']}",
        "",
        "float64 correctness:",
    ]
    lines += [f"  {k:<52} {v:.2e}" if isinstance(v, float) else f"  {k:<52} {v}" for k, v in corr.items()]
    lines += [
        "",
        f"float32, best of {report['repeats']} interleaved calls after a warm-up:",
        f"  {'variant':<36} {'best s':>8} {'vs hand':>8} {'peak RSS +MiB':>14}",
    ]
    for name, best in report["best_s"].items():
        hand = report["best_s"][HAND_STEP if name in STEPS else HAND_FORWARD]
        mib = report["peak_rss_mib"].get(name)
        lines.append(f"  {name:<36} {best:>8.4f} {best / hand:>7.2f}x {'-' if mib is None else f'{mib:.0f}':>14}")
    lines += [f"  {k}: {v}" for k, v in report["failed"].items()]
    return "\n".join(lines + ["", report["verdict"]])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    parser.add_argument("--atoms", type=int, default=192, help="a multiple of 192: the SCAN liquid frame repeated")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per variant after a warm-up (default 5)")
    parser.add_argument("--model-size", choices=sorted(MODEL_SIZES), default="study", help="as train_throughput.py")
    parser.add_argument("--json", action="store_true", help="print the report as JSON instead of the table")
    parser.add_argument("--memory-of", default=None, help=argparse.SUPPRESS)  # the child process of one variant
    args = parser.parse_args(argv)
    if args.atoms < 192 or args.atoms % 192 or args.repeats < 1 or args.threads < 1:
        parser.error("--atoms must be a multiple of 192, --repeats and --threads at least 1")
    torch.set_num_threads(args.threads)
    if args.memory_of:
        print(json.dumps(peak_rss_increase(args.model_size, args.atoms, args.memory_of)))
        return 0
    report = dict(model_size=args.model_size, threads=args.threads, repeats=args.repeats)
    report.update(meta=metadata("forward_mode.py", argv), correctness=correctness(args.model_size, args.atoms))
    report.update(timings(args.model_size, args.atoms, args.repeats))
    report["peak_rss_mib"] = {name: child_peak_rss_increase(args, name) for name in report["best_s"]}
    report["verdict"] = verdict(report)
    print(json.dumps(report, indent=1) if args.json else table(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
