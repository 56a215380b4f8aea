// petmd._bridge: the C++ bridge seen from Python, for tests and for tools that want exactly what LAMMPS runs.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <string>
#include <vector>

#include "domain_graph.h"
#include "message_exchange.h"
#include "model.h"

namespace py = pybind11;
using namespace pybind11::literals;

namespace {

template <typename T>
using Array = py::array_t<T, py::array::c_style | py::array::forcecast>;

template <typename T>
void check_shape(const Array<T> &a, std::vector<py::ssize_t> shape, const char *name) {
  bool ok = a.ndim() == static_cast<py::ssize_t>(shape.size());
  for (size_t k = 0; ok && k < shape.size(); k++) ok = shape[k] < 0 || a.shape(k) == shape[k];
  if (!ok) {
    std::string want = "(";
    for (size_t k = 0; k < shape.size(); k++)
      want += (shape[k] < 0 ? std::string("*") : std::to_string(shape[k])) + (k + 1 < shape.size() ? ", " : "");
    throw py::value_error(std::string(name) + " must have shape " + want + ")");
  }
}

template <typename T>
py::array_t<T> to_numpy(std::vector<T> values, std::vector<py::ssize_t> shape) {
  py::array_t<T> out(shape);
  std::copy(values.begin(), values.end(), out.mutable_data());
  return out;
}

py::dict compute(const petmd::Model &model, const Array<double> &positions, const Array<int64_t> &numbers,
                 const Array<double> &cell, const Array<int64_t> &edge_index, const Array<int64_t> &cell_shifts,
                 const py::object &energy_mask, bool per_atom_energies, bool with_uncertainty) {
  const auto n = positions.ndim() == 2 ? positions.shape(0) : -1;
  check_shape(positions, {-1, 3}, "positions");
  check_shape(numbers, {n}, "atomic_numbers");
  check_shape(cell, {3, 3}, "cell");
  check_shape(edge_index, {2, -1}, "edge_index");
  const auto e = edge_index.shape(1);
  check_shape(cell_shifts, {e, 3}, "cell_shifts");
  Array<bool> mask;
  petmd::SystemView view;
  if (!energy_mask.is_none()) {
    mask = energy_mask.cast<Array<bool>>();
    check_shape(mask, {n}, "energy_mask");
    view.energy_mask = mask.data();
  }
  view.n_nodes = n;
  view.positions = positions.data();
  view.atomic_numbers = numbers.data();
  view.cell = cell.data();
  view.n_edges = e;
  view.edge_index = edge_index.data();
  view.cell_shifts = cell_shifts.data();
  petmd::Result r;
  {
    py::gil_scoped_release release;
    r = model.compute(view, per_atom_energies, with_uncertainty);
  }
  py::dict out;
  out["energy"] = r.energy;
  out["forces"] = to_numpy(r.forces, {n, 3});
  out["virial"] = to_numpy(std::vector<double>(r.virial.begin(), r.virial.end()), {3, 3});
  if (per_atom_energies) out["energies"] = to_numpy(r.energies, {n});
  if (with_uncertainty) {
    out["energy_uncertainty"] = r.energy_uncertainty;
    out["uncertainty_features"] =
        to_numpy(r.uncertainty_features, {static_cast<py::ssize_t>(r.uncertainty_features.size())});
    out["atom_extrapolation"] = to_numpy(r.atom_extrapolation, {n});
  }
  return out;
}

// A domain as LAMMPS holds it, from CSR neighbour lists; `storage` keeps the per-atom pointers alive.
struct DomainArgs {
  std::vector<int> count;
  std::vector<const int *> first;
  petmd::DomainView<int64_t> view;
};

DomainArgs domain_view(const Array<double> &x, const Array<int64_t> &tags, int64_t nlocal, const Array<double> &cell,
                       const std::vector<bool> &periodic, const Array<int> &listed, const Array<int64_t> &offsets,
                       const Array<int> &neighbors) {
  check_shape(x, {-1, 3}, "x");
  const auto nall = x.shape(0);
  check_shape(tags, {nall}, "tags");
  check_shape(cell, {3, 3}, "cell");
  check_shape(offsets, {nall + 1}, "offsets");
  if (periodic.size() != 3) throw py::value_error("periodic must hold 3 flags");
  if (nlocal < 0 || nlocal > nall) throw py::value_error("nlocal must be in 0..len(x)");
  DomainArgs d;
  // CSR neighbour lists → the per-atom pointers LAMMPS hands over
  d.count.resize(nall);
  d.first.resize(nall);
  for (py::ssize_t i = 0; i < nall; i++) {
    d.count[i] = static_cast<int>(offsets.at(i + 1) - offsets.at(i));
    d.first[i] = neighbors.data() + offsets.at(i);
  }
  for (py::ssize_t k = 0; k < neighbors.size(); k++)
    if (neighbors.at(k) < 0 || neighbors.at(k) >= nall) throw py::value_error("neighbour index out of range");
  for (py::ssize_t k = 0; k < listed.size(); k++)
    if (listed.at(k) < 0 || listed.at(k) >= nall) throw py::value_error("listed atom index out of range");
  auto &v = d.view;
  v.nlocal = nlocal;
  v.nall = nall;
  v.x = x.data();
  v.tags = tags.data();
  for (int a = 0; a < 3; a++) {
    v.periodic[a] = periodic[a];
    for (int b = 0; b < 3; b++) v.cell[a][b] = cell.at(a, b);
  }
  v.n_listed = listed.size();
  v.listed = listed.data();
  v.count = d.count.data();
  v.neighbors = d.first.data();
  return d;
}

py::dict domain_graph(const Array<double> &x, const Array<int64_t> &tags, int64_t nlocal, const Array<double> &cell,
                      std::vector<bool> periodic, const Array<int> &listed, const Array<int64_t> &offsets,
                      const Array<int> &neighbors, double cutoff, bool fold) {
  const auto d = domain_view(x, tags, nlocal, cell, periodic, listed, offsets, neighbors);
  auto g = petmd::build_domain_graph(d.view, cutoff, fold);
  const auto n_edges = g.n_edges();
  py::dict out;
  out["node_atom"] = to_numpy(g.node_atom, {g.n_nodes()});
  out["edge_index"] = to_numpy(g.edge_index, {2, n_edges});
  out["cell_shifts"] = to_numpy(g.cell_shifts, {n_edges, 3});
  out["n_folded"] = g.n_folded;
  return out;
}

// The message exchange's plain-array part (message_exchange.h) for one domain: its local graph, the identity rows
// of its local atoms for `slots` edge slots per atom (at least the largest edge count), and, given identity rows
// whose ghost rows the caller filled from the atoms' owners, the row of each local edge's reverse edge.
py::dict local_graph(const Array<double> &x, const Array<int64_t> &tags, int64_t nlocal, const Array<double> &cell,
                     std::vector<bool> periodic, const Array<int> &listed, const Array<int64_t> &offsets,
                     const Array<int> &neighbors, double cutoff, int64_t slots, const py::object &identity_rows) {
  const auto d = domain_view(x, tags, nlocal, cell, periodic, listed, offsets, neighbors);
  const auto g = petmd::build_local_graph(d.view, cutoff);
  const auto n_edges = g.n_edges();
  py::dict out;
  out["edge_index"] = to_numpy(g.edge_index, {2, n_edges});
  out["offsets"] = to_numpy(g.offsets, {nlocal + 1});
  out["vectors"] = to_numpy(g.vectors, {n_edges, 3});
  out["max_neighbors"] = g.max_neighbors;
  if (slots < g.max_neighbors) throw py::value_error("slots must be at least max_neighbors");
  const auto nall = d.view.nall;
  std::vector<double> rows(static_cast<size_t>(nall * slots * petmd::kIdentityValues), 0.0);
  petmd::write_edge_identities(g, d.view.tags, slots, rows.data());
  out["identity_rows"] = to_numpy(rows, {nall, slots, petmd::kIdentityValues});
  if (!identity_rows.is_none()) {
    const auto filled = identity_rows.cast<Array<double>>();
    check_shape(filled, {nall, slots, petmd::kIdentityValues}, "identity_rows");
    const auto reverse = petmd::exchange_reverse_index(g, d.view, slots, filled.data(), cutoff);
    out["reverse"] = to_numpy(reverse, {n_edges});
  }
  return out;
}

}  // namespace

PYBIND11_MODULE(_bridge, m) {
  m.doc() = "The C++ side of petmd (libtorch model runner, LAMMPS domain graph) for use from Python";
  py::register_exception<petmd::Error>(m, "BridgeError", PyExc_RuntimeError);

  py::class_<petmd::Model>(m, "Model")
      .def(py::init<const std::string &, const std::string &, int>(), "path"_a, "device"_a = "cpu", "local_rank"_a = 0,
           "Load and check an exported petmd model on a device (cpu, cuda, cuda:N)")
      .def_property_readonly(
          "metadata",
          [](const petmd::Model &model) { return py::module_::import("json").attr("loads")(model.info().json); })
      .def_property_readonly("device", &petmd::Model::device)
      .def_property_readonly("path", &petmd::Model::path)
      .def_property_readonly("cutoff", [](const petmd::Model &model) { return model.info().cutoff; })
      .def_property_readonly("interaction_range",
                             [](const petmd::Model &model) { return model.info().interaction_range; })
      .def("compute", &compute, "positions"_a, "atomic_numbers"_a, "cell"_a, "edge_index"_a, "cell_shifts"_a,
           "energy_mask"_a = py::none(), "per_atom_energies"_a = true, "with_uncertainty"_a = false,
           "Energy (float), forces [n, 3], virial [3, 3] and per-atom energies [n], as LAMMPS gets them; "
           "with_uncertainty: energy_uncertainty, uncertainty_features [D] and atom_extrapolation [n]")
      .def("energy_uncertainty", &petmd::Model::energy_uncertainty, "features"_a,
           "sigma (eV) of the energy whose summed last-layer features are `features`")
      .def("set_tf32", &petmd::Model::set_tf32, "on"_a,
           "TF32 in float32 matrix products (CUDA devices only; a setting of the whole process)");

  m.def("resolve_device", &petmd::resolve_device, "request"_a, "local_rank"_a = 0);
  m.def("set_num_threads", &petmd::set_num_threads, "n"_a);
  m.def("build_domain_graph", &domain_graph, "x"_a, "tags"_a, "nlocal"_a, "cell"_a, "periodic"_a, "listed"_a,
        "offsets"_a, "neighbors"_a, "cutoff"_a, "fold"_a = true,
        "The graph pair_style pet evaluates for one domain (local atoms first, then ghosts), from CSR neighbour "
        "lists; returns node_atom, edge_index, cell_shifts, n_folded");
  m.def("local_graph", &local_graph, "x"_a, "tags"_a, "nlocal"_a, "cell"_a, "periodic"_a, "listed"_a, "offsets"_a,
        "neighbors"_a, "cutoff"_a, "slots"_a, "identity_rows"_a = py::none(),
        "What message exchange builds for one domain (cpp/message_exchange.h): edge_index, offsets, vectors, "
        "max_neighbors, identity_rows [nall, slots, 4] (local atoms' rows filled); with identity_rows whose ghost "
        "rows hold their owners' rows, also reverse: each local edge's row of its reverse edge's token in "
        "[E local | slots rows per ghost | one zero row]");
}
