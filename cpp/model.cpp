// petmd::Model: loading and checking an exported file, and its two ways of running it (the whole system in one
// call; layer by layer with message exchange between domains). Every libtorch call of the bridge is here, which keeps
// torch out of every other file; that is why this file is ~480 lines.
#include "model.h"

#include <torch/csrc/jit/runtime/graph_executor.h>
#include <torch/script.h>
#include <torch/torch.h>
#include <torch/version.h>

#include <algorithm>
#include <fstream>

// nlohmann/json as vendored (in its own namespace) with the LAMMPS headers; any nlohmann 3.x would do.
#include "nlohmann/json.hpp"

namespace petmd {
namespace {

using json = nlohmann_lmp::basic_json<>;

constexpr const char *kMetadataFile = "petmd.json";
constexpr const char *kFormat = "petmd-model";
// The exported interface's version (FORMAT_VERSION in python/petmd/exported.py, which says what each one is).
constexpr int64_t kFormatVersion = 4;
// Version 3 files run too: the interface of version 4 less the uncertainty, which they say they have none of.
constexpr int64_t kOldestFormatVersion = 3;

// The network's precision by the name the metadata gives it (python/petmd/precision.py on the Python side).
bool is_network_dtype(const std::string &name) {
  return name == "float32" || name == "float64";
}

torch::Dtype network_dtype(const std::string &name) {
  return name == "float64" ? torch::kFloat64 : torch::kFloat32;
}

// The one line of a torch/TorchScript exception that says what went wrong (its traceback is for developers).
std::string torch_message(const std::exception &err) {
  std::string text = err.what();
  if (auto c10err = dynamic_cast<const c10::Error *>(&err)) text = c10err->what_without_backtrace();
  const std::string marker = "RuntimeError: ";
  auto pos = text.rfind(marker);
  if (pos != std::string::npos) text = text.substr(pos + marker.size());
  auto end = text.find('\n');
  if (end != std::string::npos) text = text.substr(0, end);
  return text;
}

template <typename T>
T required(const json &meta, const std::string &key, const std::string &path) {
  if (!meta.contains(key))
    throw Error(path + ": the model metadata lacks '" + key + "': re-export the model with `petmd export`");
  try {
    return meta.at(key).get<T>();
  } catch (const std::exception &) {
    throw Error(path + ": the model metadata has an invalid '" + key + "' (" + meta.at(key).dump() +
                "): re-export the model with `petmd export`");
  }
}

ModelInfo parse_metadata(const std::string &text, const std::string &path) {
  json meta;
  try {
    meta = json::parse(text);
  } catch (const std::exception &err) {
    throw Error(path + ": its petmd.json metadata is not valid JSON (" + std::string(err.what()) + ")");
  }
  if (!meta.is_object() || meta.value("format", std::string()) != kFormat)
    throw Error(path + " is not a petmd model (its metadata format is not '" + kFormat + "')");
  const auto version = required<int64_t>(meta, "format_version", path);
  if (version < kOldestFormatVersion)
    throw Error(path + " has model format version " + std::to_string(version) +
                ", which this petmd no longer runs (it reads versions " + std::to_string(kOldestFormatVersion) +
                " to " + std::to_string(kFormatVersion) + "): re-export it with `petmd export " + path +
                " -o NEW.pt` (or from its checkpoint)");
  if (version > kFormatVersion)
    throw Error(path + " has model format version " + std::to_string(version) + ", newer than this plugin reads (" +
                std::to_string(kFormatVersion) + "): use the plugin built by the petmd that exported it");

  ModelInfo info;
  info.json = text;
  info.atomic_numbers = required<std::vector<int64_t>>(meta, "atomic_numbers", path);
  info.species = required<std::vector<std::string>>(meta, "species", path);
  info.cutoff = required<double>(meta, "cutoff", path);
  info.cutoff_width = meta.value("cutoff_width", 0.0);
  info.interaction_range = required<double>(meta, "interaction_range", path);
  info.n_gnn_layers = required<int64_t>(meta, "n_gnn_layers", path);
  info.dtype = required<std::string>(meta, "dtype", path);
  info.symmetrize = meta.value("symmetrize", std::string("none"));
  info.citation = meta.value("citation", std::string());
  info.torch_version = meta.value("torch_version", std::string("unknown"));
  info.petmd_version = meta.value("petmd_version", std::string("unknown"));
  info.format_version = version;
  info.has_uncertainty = meta.contains("uncertainty") && meta.at("uncertainty").is_object();
  if (info.has_uncertainty) info.uncertainty_features = meta.at("uncertainty").value("features", int64_t{0});

  const auto units = meta.value("units", std::string("metal"));
  auto bad = [&](const std::string &what) { throw Error(path + ": invalid model metadata: " + what); };
  if (units != "metal") bad("units are '" + units + "', only 'metal' is supported");
  if (info.atomic_numbers.empty()) bad("the model has no species");
  if (info.species.size() != info.atomic_numbers.size()) bad("'species' and 'atomic_numbers' differ in length");
  for (auto z : info.atomic_numbers)
    if (z < 1 || z > 118) bad("atomic number " + std::to_string(z) + " is not in 1..118");
  if (!(info.cutoff > 0.0)) bad("the cutoff must be positive");
  if (info.n_gnn_layers < 1) bad("n_gnn_layers must be at least 1");
  if (info.interaction_range < info.cutoff) bad("interaction_range is smaller than the cutoff");
  if (!is_network_dtype(info.dtype)) bad("dtype '" + info.dtype + "' is not float32/float64");
  return info;
}

torch::Tensor view_or_zeros(const void *data, std::vector<int64_t> shape, torch::Dtype dtype) {
  auto options = torch::TensorOptions().dtype(dtype);
  int64_t numel = 1;
  for (auto s : shape) numel *= s;
  if (data == nullptr || numel == 0) return torch::zeros(shape, options);
  // The module only reads its inputs, so the caller's memory can back the CPU tensor without a copy.
  return torch::from_blob(const_cast<void *>(data), shape, options);
}

// The forward inputs of one system on the model's device (CPU tensors view the caller's memory).
std::vector<torch::jit::IValue> inputs(const SystemView &s, const torch::Device &dev) {
  const auto n = s.n_nodes;
  const auto e = s.n_edges;
  auto to_dev = [&](torch::Tensor t) { return dev.is_cpu() ? t : t.to(dev); };
  auto mask = s.energy_mask ? to_dev(view_or_zeros(s.energy_mask, {n}, torch::kBool))
                            : torch::ones({n}, torch::TensorOptions().dtype(torch::kBool).device(dev));
  return {to_dev(view_or_zeros(s.positions, {n, 3}, torch::kFloat64)),
          to_dev(view_or_zeros(s.atomic_numbers, {n}, torch::kInt64)),
          to_dev(view_or_zeros(s.cell, {3, 3}, torch::kFloat64)),
          to_dev(view_or_zeros(s.edge_index, {2, e}, torch::kInt64)),
          to_dev(view_or_zeros(s.cell_shifts, {e, 3}, torch::kInt64)),
          mask};
}

std::vector<double> to_vector(const torch::Tensor &t) {
  auto c = t.detach().to(torch::kCPU, torch::kFloat64).contiguous();
  return std::vector<double>(c.data_ptr<double>(), c.data_ptr<double>() + c.numel());
}

torch::jit::IValue call(torch::jit::Module &module, const std::string &method, std::vector<torch::jit::IValue> args) {
  // forces and virial come from autograd inside the method: gradient recording must be on
  torch::AutoGradMode grad(true);
  // The profiling executor re-specialises the graph whenever the edge count changes (every MD step), and its
  // optimised graphs run slower than the plain interpreter (docs/benchmarks.md). Run unoptimised, for this call only.
  torch::jit::GraphOptimizerEnabledGuard no_graph_optimization(false);
  return module.get_method(method)(std::move(args));
}

c10::Dict<c10::IValue, c10::IValue> call_dict(torch::jit::Module &module, const std::string &method,
                                              std::vector<torch::jit::IValue> args) {
  return call(module, method, std::move(args)).toGenericDict();
}

// Calls a run-time setting method of the module, which checks the value and says what is wrong with it.
void run_setter(torch::jit::Module &module, const std::string &method, const c10::IValue &value) {
  try {
    module.run_method(method, value);
  } catch (const std::exception &err) {
    throw Error(torch_message(err));
  }
}

// The module's uncertainty output, on for one call only (a Model may be shared by several pair styles): off again
// however the call ends.
class UncertaintyFor {
 public:
  UncertaintyFor(torch::jit::Module &module, bool on) : module_(module), on_(on) {
    if (on_) module_.run_method("set_uncertainty", true);
  }
  ~UncertaintyFor() {
    if (!on_) return;
    try {
      module_.run_method("set_uncertainty", false);
    } catch (...) {  // switching it off cannot fail on a module that switched it on
    }
  }
  UncertaintyFor(const UncertaintyFor &) = delete;
  UncertaintyFor &operator=(const UncertaintyFor &) = delete;

 private:
  torch::jit::Module &module_;
  bool on_;
};

}  // namespace

struct Model::Impl {
  mutable torch::jit::Module module;
  torch::Device device{torch::kCPU};
  int64_t message_width = 0;
};

std::string resolve_device(const std::string &request, int local_rank) {
  if (request == "cpu") return "cpu";
  if (request.rfind("cuda", 0) != 0) throw Error("unknown device '" + request + "': use cpu, cuda or cuda:N");
  if (!torch::cuda::is_available())
    throw Error("device '" + request + "' was requested, but this libtorch (" + TORCH_VERSION +
                ") sees no CUDA device (a CPU-only torch build, or no GPU visible): use device cpu");
  const int64_t count = static_cast<int64_t>(torch::cuda::device_count());
  int64_t index = 0;
  if (request == "cuda") {
    index = local_rank % count;
  } else {
    const std::string digits = request.substr(5);
    if (request[4] != ':' || digits.empty() || digits.find_first_not_of("0123456789") != std::string::npos)
      throw Error("unknown device '" + request + "': use cpu, cuda or cuda:N");
    index = std::stoll(digits);
    if (index >= count)
      throw Error("device '" + request + "' does not exist: torch sees " + std::to_string(count) +
                  " CUDA device(s), cuda:0 to cuda:" + std::to_string(count - 1));
  }
  return "cuda:" + std::to_string(index);
}

void set_num_threads(int n) {
  if (n < 1) throw Error("the number of threads must be at least 1");
  torch::set_num_threads(n);
}

Model::Model(const std::string &path, const std::string &device, int local_rank)
    : impl_(std::make_unique<Impl>()), path_(path) {
  std::ifstream file(path, std::ios::binary);
  if (!file.good()) throw Error("model file '" + path + "' does not exist or cannot be read");
  char magic[2] = {0, 0};
  file.read(magic, 2);
  if (magic[0] != 'P' || magic[1] != 'K')  // TorchScript files are zip archives
    throw Error("'" + path +
                "' is not a TorchScript model file (not a zip archive): export the model with "
                "`petmd export CHECKPOINT -o model.pt`");
  device_ = resolve_device(device, local_rank);
  impl_->device = torch::Device(device_);

  torch::jit::ExtraFilesMap extra{{kMetadataFile, ""}};
  try {
    impl_->module = torch::jit::load(path, impl_->device, extra);
  } catch (const std::exception &err) {
    throw Error("cannot load '" + path + "' as a TorchScript model (" + torch_message(err) +
                "): export it with `petmd export`, using a torch no newer than this libtorch " + TORCH_VERSION);
  }
  if (extra[kMetadataFile].empty())
    throw Error("'" + path + "' is a TorchScript file but not a petmd model (no " + kMetadataFile +
                " metadata): export it with `petmd export`");
  info_ = parse_metadata(extra[kMetadataFile], path);
  mode_ = info_.symmetrize;
  impl_->module.eval();
  impl_->message_width = call(impl_->module, "message_width", {}).toInt();
}

Model::~Model() = default;

GridResult Model::compute_grid(const SystemView &s, const std::string &grid) const {
  GridResult result;
  try {
    auto args = inputs(s, impl_->device);
    args.emplace_back(grid);
    auto out = call_dict(impl_->module, "evaluate_grid", std::move(args));
    result.energy = out.at("energy").toTensor().item<double>();
    result.forces = to_vector(out.at("forces").toTensor());
    result.grid_energies = to_vector(out.at("grid_energies").toTensor());
    result.grid_weights = to_vector(out.at("grid_weights").toTensor());
    result.grid_forces = to_vector(out.at("grid_forces").toTensor());
  } catch (const std::exception &err) {
    throw Error("grid evaluation failed on " + std::to_string(s.n_nodes) + " atoms: " + torch_message(err));
  }
  return result;
}

void Model::set_symmetrization(const std::string &mode) {
  if (mode == mode_) return;
  run_setter(impl_->module, "set_symmetrization", mode);
  mode_ = mode;
}

void Model::set_correction(bool on) {
  if (on == correction_) return;
  run_setter(impl_->module, "set_correction", on);
  correction_ = on;
}

void Model::set_random_seed(uint64_t seed) {
  torch::manual_seed(seed);
}

// The module checks the value (n >= -1) and says what is wrong.
void Model::set_chunk_atoms(int64_t n) {
  if (n == chunk_) return;
  run_setter(impl_->module, "set_chunk_atoms", n);
  chunk_ = n;
}

void Model::set_tf32(bool on) {
  if (on && !impl_->device.is_cuda())
    throw Error("tf32 speeds up float32 matrix products on CUDA devices; this model runs on " + device_ +
                ": use `device cuda`, or drop `tf32 yes`");
  at::globalContext().setAllowTF32CuBLAS(on);
  at::globalContext().setAllowTF32CuDNN(on);
}

Result Model::compute(const SystemView &s, bool per_atom_energies, bool with_uncertainty) const {
  Result result;
  if (with_uncertainty) require_uncertainty();
  try {
    UncertaintyFor uncertainty(impl_->module, with_uncertainty);
    auto out = call_dict(impl_->module, "forward", inputs(s, impl_->device));
    result.energy = out.at("energy").toTensor().detach().item<double>();
    result.forces = to_vector(out.at("forces").toTensor());
    const auto virial = to_vector(out.at("virial").toTensor());
    std::copy(virial.begin(), virial.end(), result.virial.begin());
    if (per_atom_energies) result.energies = to_vector(out.at("energies").toTensor());
    if (with_uncertainty) {
      result.energy_uncertainty = out.at("energy_uncertainty").toTensor().detach().item<double>();
      result.uncertainty_features = to_vector(out.at("uncertainty_features").toTensor());
      result.atom_extrapolation = to_vector(out.at("atom_extrapolation").toTensor());
    }
  } catch (const std::exception &err) {
    throw Error("the model failed on " + std::to_string(s.n_nodes) + " atoms and " + std::to_string(s.n_edges) +
                " edges: " + torch_message(err));
  }
  return result;
}

void Model::require_uncertainty() const {
  if (info_.has_uncertainty) return;
  throw Error(path_ + " (model format version " + std::to_string(info_.format_version) +
              ") has no uncertainty calibration: export its checkpoint with `petmd export CHECKPOINT -o MODEL.pt "
              "--uncertainty` (docs/uncertainty.md)");
}

double Model::energy_uncertainty(const std::vector<double> &features) const {
  require_uncertainty();
  try {
    auto f = torch::from_blob(const_cast<double *>(features.data()), {static_cast<int64_t>(features.size())},
                              torch::kFloat64)
                 .to(impl_->device);
    return impl_->module.run_method("energy_uncertainty", f).toTensor().item<double>();
  } catch (const std::exception &err) {
    throw Error("the energy uncertainty of " + std::to_string(features.size()) +
                " summed features failed: " + torch_message(err));
  }
}

int64_t Model::grid_size(const std::string &grid) const {
  try {
    return impl_->module.run_method("message_grid", grid).toTuple()->elements()[1].toTensor().size(0);
  } catch (const std::exception &err) {
    throw Error(torch_message(err));
  }
}

int64_t Model::message_width() const {
  return impl_->message_width;
}

namespace {

// The message recurrence between layers, m_(k+1) = (m_k + out_k[reverse]) / 2 (graph.next_messages in Python),
// where out_k holds [this domain's tokens | ghost rows | zero row].
torch::Tensor next_messages(const torch::Tensor &messages, const torch::Tensor &out, const torch::Tensor &reverse) {
  return 0.5 * (messages + out.index_select(0, reverse));
}

// Its adjoint (graph.message_adjoints): from dE/dm_(k+1), the part for m_k, and the part for out_k's n_rows rows,
// dE/dout_k[r] = sum over edges e with reverse[e] = r of dE/dm_(k+1)[e] / 2 (the ghost rows' part belongs to other
// domains).
torch::Tensor carried_adjoint(const torch::Tensor &message_adjoint) {
  return 0.5 * message_adjoint;
}

torch::Tensor output_adjoint(const torch::Tensor &message_adjoint, const torch::Tensor &reverse, int64_t n_rows) {
  return torch::zeros({n_rows, message_adjoint.size(1)}, message_adjoint.options())
      .index_add_(0, reverse, 0.5 * message_adjoint);
}

}  // namespace

// One domain's edge tensors on the model's device, and the layer loop of docs/pair_pet.md ("exchange") over them,
// with the layers themselves in the exported module: forward without autograd keeping each layer's input
// messages, then backward layer by layer, trading tokens after each forward layer and their adjoints before each
// backward one.
struct Model::ExchangeLayers {
  torch::jit::Module &module;
  MessageExchange &exchange;
  const ExchangeSystem &s;
  int64_t d, n_layers;
  torch::TensorOptions options;
  torch::Tensor central, neighbor_numbers, edge_index, vectors, reverse;
  torch::Tensor sent;  // [n_sent] local edges whose tokens travel
  std::vector<double> ghost_host, sent_host;

  ExchangeLayers(torch::jit::Module &m, MessageExchange &ex, const ExchangeSystem &system, const torch::Device &dev,
                 int64_t width, int64_t layers, torch::Dtype dtype)
      : module(m),
        exchange(ex),
        s(system),
        d(width),
        n_layers(layers),
        options(torch::TensorOptions().dtype(dtype).device(dev)),
        ghost_host(static_cast<size_t>(system.n_ghost_rows * width)),
        sent_host(ex.sent_edges().size() * static_cast<size_t>(width)) {
    auto on_device = [&](torch::Tensor t) { return dev.is_cpu() ? t : t.to(dev); };
    const auto numbers = on_device(view_or_zeros(s.atomic_numbers, {s.n_all}, torch::kInt64));
    edge_index = on_device(view_or_zeros(s.edge_index, {2, s.n_edges}, torch::kInt64));
    vectors = on_device(view_or_zeros(s.edge_vectors, {s.n_edges, 3}, torch::kFloat64));
    reverse = on_device(view_or_zeros(s.reverse, {s.n_edges}, torch::kInt64));
    const auto &sent_edges = ex.sent_edges();
    const int64_t n_sent = static_cast<int64_t>(sent_edges.size());
    sent = view_or_zeros(sent_edges.data(), {n_sent}, torch::kInt64).to(dev, /*non_blocking=*/false, /*copy=*/true);
    central = numbers.slice(0, 0, s.n_central);
    neighbor_numbers = numbers.index_select(0, edge_index[1]);
  }

  // [E local | ghost rows | zero row] from this domain's tokens
  torch::Tensor with_ghosts(const torch::Tensor &out) {
    auto host = out.detach().index_select(0, sent).to(torch::kCPU, torch::kFloat64).contiguous();
    exchange.forward(host.data_ptr<double>(), d, ghost_host.data());
    auto ghosts = torch::from_blob(ghost_host.data(), {s.n_ghost_rows, d}, torch::kFloat64).to(options);
    return torch::cat({out, ghosts, torch::zeros({1, d}, options)});
  }

  // dE/dout of this domain's tokens from the adjoints of [E local | ghost rows | zero row]
  torch::Tensor gathered(const torch::Tensor &extended) {
    const int64_t n_edges = s.n_edges;
    auto ghosts = extended.slice(0, n_edges, n_edges + s.n_ghost_rows).to(torch::kCPU, torch::kFloat64).contiguous();
    exchange.reverse(ghosts.data_ptr<double>(), d, sent_host.data());
    const auto received = torch::from_blob(sent_host.data(), {sent.size(0), d}, torch::kFloat64).to(options);
    return extended.slice(0, 0, n_edges).index_add(0, sent, received);
  }

  // The network on the edge vectors rotated by `rotation` (x Q^T): summed layer energies [n] (float64, unscaled),
  // dE/dx [E, 3] in the unrotated frame and, with the module's uncertainty on, the central atoms' last-layer
  // features [n, D] (else undefined).
  struct Rotated {
    torch::Tensor energy, gradient, features;
  };
  Rotated evaluate_rotated(const torch::Tensor &rotation, bool with_features) {
    const int64_t n_edges = s.n_edges;
    const auto rotated = vectors.matmul(rotation.t());
    const auto edge_i = edge_index[0];
    torch::Tensor energy = torch::zeros({s.n_central}, options);
    std::vector<torch::Tensor> messages{torch::zeros({0, d}, options)};
    std::vector<torch::Tensor> features(static_cast<size_t>(n_layers));
    for (int64_t k = 0; k + 1 < n_layers; k++) {
      auto out = call(module, "message_layer", {k, central, neighbor_numbers, edge_i, rotated, messages[k]}).toTuple();
      energy += out->elements()[0].toTensor();
      const auto used = out->elements()[2].toTensor();  // layer 0: the neighbour embeddings
      if (with_features) features[k] = out->elements()[3].toTensor();
      messages[k] = used;
      messages.push_back(next_messages(used, with_ghosts(out->elements()[1].toTensor()), reverse));
    }
    auto gradient = torch::zeros({n_edges, 3}, vectors.options());
    torch::Tensor adjoint;  // dE/dm_(k+1)
    for (int64_t k = n_layers - 1; k >= 0; k--) {
      const auto out_adjoint = k == n_layers - 1
                                   ? torch::zeros({n_edges, d}, options)
                                   : gathered(output_adjoint(adjoint, reverse, n_edges + s.n_ghost_rows + 1));
      auto out = call(module, "message_layer_backward",
                      {k, central, neighbor_numbers, edge_i, rotated, messages[k], out_adjoint})
                     .toTuple();
      if (k == n_layers - 1) {
        energy += out->elements()[0].toTensor();
        if (with_features) features[k] = out->elements()[3].toTensor();
      }
      gradient += out->elements()[1].toTensor();
      const auto message_adjoint = out->elements()[2].toTensor();
      adjoint = adjoint.defined() ? carried_adjoint(adjoint) + message_adjoint : message_adjoint;
      messages[k] = torch::Tensor();
    }
    Rotated result{energy.to(torch::kFloat64), gradient.matmul(rotation), torch::Tensor()};
    if (with_features) result.features = torch::cat(features, 1);
    return result;
  }

  // energy, energies [n], forces [n_all, 3], virial [3, 3] from summed layer energies and dE/dx
  c10::Dict<c10::IValue, c10::IValue> result(const torch::Tensor &energy, const torch::Tensor &gradient) {
    return call(module, "message_result", {central, energy, edge_index, vectors, gradient, s.n_all}).toGenericDict();
  }

  // rotations [K, 3, 3] and weights [K] of a message_rotations / message_grid call
  std::pair<torch::Tensor, torch::Tensor> rotations(const std::string &method, std::vector<torch::jit::IValue> args) {
    auto out = call(module, method, std::move(args)).toTuple();
    return {out->elements()[0].toTensor().to(vectors.options()), out->elements()[1].toTensor().to(vectors.options())};
  }
};

Model::ExchangeLayers Model::exchange_layers(const ExchangeSystem &s, MessageExchange &exchange) const {
  return ExchangeLayers(impl_->module, exchange, s, impl_->device, impl_->message_width, info_.n_gnn_layers,
                        network_dtype(info_.dtype));
}

Result Model::compute_exchanged(const ExchangeSystem &s, MessageExchange &exchange, bool per_atom_energies,
                                bool with_uncertainty) const {
  Result result;
  if (with_uncertainty) require_uncertainty();
  try {
    auto layers = exchange_layers(s, exchange);
    // the mode's rotated copies (the identity for none), each rotated back, weighted
    const auto [rotations, weights] = layers.rotations("message_rotations", {});
    auto energy = torch::zeros({s.n_central}, layers.vectors.options());
    auto gradient = torch::zeros({s.n_edges, 3}, layers.vectors.options());
    torch::Tensor features;  // the symmetrized prediction's: the mean over the copies of positive weight
    UncertaintyFor uncertainty(impl_->module, with_uncertainty);
    for (int64_t k = 0; k < rotations.size(0); k++) {
      const auto rotated = layers.evaluate_rotated(rotations[k], with_uncertainty);
      energy += weights[k] * rotated.energy;
      gradient += weights[k] * rotated.gradient;
      if (with_uncertainty) {
        const auto part = weights[k].clamp_min(0.0) * rotated.features;
        features = features.defined() ? features + part : part;
      }
    }
    auto totals = layers.result(energy, gradient);
    result.energy = totals.at("energy").toTensor().item<double>();
    result.forces = to_vector(totals.at("forces").toTensor());
    const auto virial = to_vector(totals.at("virial").toTensor());
    std::copy(virial.begin(), virial.end(), result.virial.begin());
    if (per_atom_energies) result.energies = to_vector(totals.at("energies").toTensor());
    if (with_uncertainty) {
      const auto summed = features.sum(0);
      result.uncertainty_features = to_vector(summed);
      result.energy_uncertainty = impl_->module.run_method("energy_uncertainty", summed).toTensor().item<double>();
      result.atom_extrapolation = to_vector(impl_->module.run_method("atom_extrapolation", features).toTensor());
    }
  } catch (const Error &) {
    throw;
  } catch (const std::exception &err) {
    throw Error("the model failed on " + std::to_string(s.n_central) + " atoms and " + std::to_string(s.n_edges) +
                " edges (message exchange): " + torch_message(err));
  }
  return result;
}

GridResult Model::compute_grid_exchanged(const ExchangeSystem &s, MessageExchange &exchange,
                                         const std::string &grid) const {
  GridResult result;
  try {
    auto layers = exchange_layers(s, exchange);
    const auto identity = torch::eye(3, layers.vectors.options());
    const auto plain_copy = layers.evaluate_rotated(identity, false);
    auto plain = layers.result(plain_copy.energy, plain_copy.gradient);
    result.energy = plain.at("energy").toTensor().item<double>();
    result.forces = to_vector(plain.at("forces").toTensor());
    const auto [rotations, weights] = layers.rotations("message_grid", {grid});
    torch::Tensor mean_forces;
    for (int64_t k = 0; k < rotations.size(0); k++) {
      const auto copy = layers.evaluate_rotated(rotations[k], false);
      auto rotated = layers.result(copy.energy, copy.gradient);
      result.grid_energies.push_back(rotated.at("energy").toTensor().item<double>());
      auto forces = weights[k] * rotated.at("forces").toTensor();
      mean_forces = mean_forces.defined() ? mean_forces + forces : forces;
    }
    result.grid_weights = to_vector(weights);
    result.grid_forces = to_vector(mean_forces);
  } catch (const Error &) {
    throw;
  } catch (const std::exception &err) {
    throw Error("grid evaluation failed on " + std::to_string(s.n_central) +
                " atoms (message exchange): " + torch_message(err));
  }
  return result;
}

}  // namespace petmd

extern "C" petmd::Model *petmd_open_model(const char *path, const char *device, int local_rank, int threads,
                                          std::string *error) {
  try {
    // before torch's first operation, so that its worker threads inherit the mode: a trained model's attention
    // weights underflow into subnormal floats, each a slow multiply on x86. It made training steps 9-16 % slower;
    // energies and forces showed no loss beyond the noise (docs/benchmarks.md), but sharper models may
    // (petmd.cpu.flush_subnormals is the Python side)
    at::globalContext().setFlushDenormal(true);
    if (threads > 0) petmd::set_num_threads(threads);
    return new petmd::Model(path, device, local_rank);
  } catch (const std::exception &err) {
    *error = err.what();
    return nullptr;
  }
}
