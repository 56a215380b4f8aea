// petmd::Model: an exported petmd model (docs/model-interface.md) loaded with libtorch.
// No LAMMPS types here: the plugin and the Python module both call this.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

// what libpetmd_model.so exports (everything else in it is hidden)
#define PETMD_API __attribute__((visibility("default")))

namespace petmd {

// Every user-facing failure of the bridge: one line that names the problem and the fix.
class PETMD_API Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct ModelInfo {
  std::vector<std::string> species;  // chemical symbols, same order as atomic_numbers
  std::vector<int64_t> atomic_numbers;
  double cutoff = 0.0;             // Å
  double cutoff_width = 0.0;       // Å
  double interaction_range = 0.0;  // Å, n_gnn_layers × cutoff: the ghost shell a domain needs
  int64_t n_gnn_layers = 0;
  std::string dtype;  // "float32" | "float64": the network's arithmetic
  std::string symmetrize;
  std::string citation;
  std::string torch_version;  // torch that exported the file
  std::string petmd_version;
  int64_t format_version = 0;
  bool has_uncertainty = false;      // the file carries an uncertainty calibration (`petmd export --uncertainty`)
  int64_t uncertainty_features = 0;  // D: the last-layer features its uncertainty is a quadratic form of
  std::string json;                  // the whole petmd.json, verbatim
};

// One system: n nodes, E directed edges; arrays are row-major, as in docs/model-interface.md §3.
struct SystemView {
  int64_t n_nodes = 0;
  const double *positions = nullptr;        // [n, 3] Å
  const int64_t *atomic_numbers = nullptr;  // [n]
  const double *cell = nullptr;             // [3, 3] rows = cell vectors; nullptr = zeros
  int64_t n_edges = 0;
  const int64_t *edge_index = nullptr;   // [2, E]: sources then destinations
  const int64_t *cell_shifts = nullptr;  // [E, 3]; nullptr = zeros
  const bool *energy_mask = nullptr;     // [n]; nullptr = every node counts
};

struct Result {
  double energy = 0.0;             // eV, sum over masked-in nodes
  std::vector<double> energies;    // [n] eV (only if requested)
  std::vector<double> forces;      // [n, 3] eV/Å, ghosts included
  std::array<double, 9> virial{};  // W[a][b] = -dE/d(strain_ab), eV, row-major
  // with_uncertainty only (docs/uncertainty.md): sigma of the energy (eV), the masked-in nodes' summed last-layer
  // features [D] (sum them over domains and call energy_uncertainty for the whole system's sigma) and each node's
  // extrapolation score [n] (1: a typical validation atom; 0 for masked-out nodes)
  double energy_uncertainty = 0.0;
  std::vector<double> uncertainty_features;
  std::vector<double> atom_extrapolation;
};

// The network as trained against its average over a rotation grid, for one system (on-the-fly diagnostics).
struct GridResult {
  double energy = 0.0;                // plain network, eV (masked-in nodes)
  std::vector<double> forces;         // [n, 3] plain network
  std::vector<double> grid_energies;  // [K] energy of each rotated copy
  std::vector<double> grid_weights;   // [K] quadrature weights (sum 1)
  std::vector<double> grid_forces;    // [n, 3] weighted mean of the back-rotated forces
};

// One domain's share of a system for message exchange between domains (docs/pair_pet.md, "exchange"): the network
// runs on the domain's own atoms (the central atoms) only; see message_exchange.h for the rows.
struct ExchangeSystem {
  int64_t n_central = 0;                    // central atoms: 0..n_central-1 of the n_all atoms
  int64_t n_all = 0;                        // every atom an edge reaches (central + ghosts)
  const int64_t *atomic_numbers = nullptr;  // [n_all]
  int64_t n_edges = 0;
  const int64_t *edge_index = nullptr;   // [2, E]: central atom, then neighbour (of the n_all)
  const double *edge_vectors = nullptr;  // [E, 3] x_e = r_j - r_i, Å
  const int64_t *reverse = nullptr;      // [E] row of each reverse edge's token in [E local | ghost rows | zero row]
  int64_t n_ghost_rows = 0;
};

// How a domain trades edge tokens with the domains that hold its ghosts, once per layer each way (the LAMMPS glue
// implements it on LAMMPS's communication).
class MessageExchange {
 public:
  virtual ~MessageExchange() = default;
  // The local edges whose tokens other domains use (about a fifth of them), in the order of the rows below: only
  // these leave the device.
  virtual const std::vector<int64_t> &sent_edges() const = 0;
  // sent_rows [n_sent, d]: the tokens of sent_edges(). Fills ghost_rows [n_ghost_rows, d] with the ghosts' tokens.
  virtual void forward(const double *sent_rows, int64_t d, double *ghost_rows) = 0;
  // ghost_adjoint [n_ghost_rows, d]: adjoints of the ghost tokens used here. Writes what the other domains send
  // back for the tokens of sent_edges() into sent_adjoint [n_sent, d].
  virtual void reverse(const double *ghost_adjoint, int64_t d, double *sent_adjoint) = 0;
};

// "cpu", "cuda" (→ cuda:(local_rank % device count)) or "cuda:N"; throws Error if that device cannot be used.
PETMD_API std::string resolve_device(const std::string &request, int local_rank);

// Intra-op threads of libtorch for this process (n >= 1).
PETMD_API void set_num_threads(int n);

class PETMD_API Model {
 public:
  // Loads and checks the file; `device` as accepted by resolve_device (already resolved or not).
  Model(const std::string &path, const std::string &device, int local_rank = 0);
  // virtual: a Model made by petmd_open_model in an isolated library is used through its vtable only
  virtual ~Model();
  Model(const Model &) = delete;
  Model &operator=(const Model &) = delete;

  const ModelInfo &info() const { return info_; }
  const std::string &device() const { return device_; }
  const std::string &path() const { return path_; }

  // Forward + backward of the exported module; inputs are copied to the device once, outputs back in float64.
  // with_uncertainty: also the uncertainty (throws Error naming the fix when the file has no calibration).
  virtual Result compute(const SystemView &system, bool per_atom_energies, bool with_uncertainty = false) const;

  // sigma (eV) of the energy whose summed last-layer features are `features` [D] (Result::uncertainty_features,
  // summed over domains).
  virtual double energy_uncertainty(const std::vector<double> &features) const;

  // compute on one domain with message exchange: energies of the central atoms, forces on all n_all atoms (ghosts'
  // forces belong to their owners), this domain's share of the virial; in the symmetrization mode (none, random,
  // grid:G; not ecse). Every domain must call it (the exchange is collective), also one without atoms.
  virtual Result compute_exchanged(const ExchangeSystem &system, MessageExchange &exchange, bool per_atom_energies,
                                   bool with_uncertainty = false) const;

  // compute_grid with message exchange (the network as trained, and its average over `grid`).
  virtual GridResult compute_grid_exchanged(const ExchangeSystem &system, MessageExchange &exchange,
                                            const std::string &grid) const;

  // Rotations in grid `grid` ("0", "i", "L" or "Li"), each one evaluation of the network; throws Error for an unknown
  // grid or one larger than the model runs (the exported module checks both).
  virtual int64_t grid_size(const std::string &grid) const;

  // d: values per edge token that compute_exchanged trades.
  virtual int64_t message_width() const;

  // Plain network and grid average ("0", "i", "L" or "Li") in one go; throws Error for an unknown grid.
  virtual GridResult compute_grid(const SystemView &system, const std::string &grid) const;

  // What compute returns: "none", "random", "grid:G" or "ecse" (docs/model-interface.md §2, `symmetrize`); overrides the
  // file's default (info().symmetrize). Throws Error for an unknown mode (the exported module knows the modes and
  // names them).
  virtual void set_symmetrization(const std::string &mode);
  const std::string &symmetrization() const { return mode_; }

  // With on, compute returns (the mode − the network as trained): the slow term of multiple time stepping. Throws
  // Error in mode none.
  virtual void set_correction(bool on);
  bool correction() const { return correction_; }

  // The mode and correction together, in the order the module accepts (for callers that share one model). Inline:
  // callers reach a Model in an isolated library through its virtual methods only.
  void configure(const std::string &mode, bool correction) {
    if (!correction) set_correction(false);  // the module refuses mode none while the correction is on
    set_symmetrization(mode);
    if (correction) set_correction(true);
  }

  // Seeds torch's generator, which the "random" mode draws its rotation from.
  virtual void set_random_seed(uint64_t seed);

  // Systems of more than n nodes are evaluated in chunks of n atoms with recomputation: memory bounded by the
  // chunk, at the cost of one more forward pass; 0 = never, -1 = the device's default.
  virtual void set_chunk_atoms(int64_t n);

  // TF32 (10-bit mantissa) in the float32 matrix products of CUDA devices: a higher rate than float32 on Ampere
  // and Hopper GPUs, at a small cost in accuracy. A setting of libtorch for the whole process. Throws Error on a
  // CPU device, where it would do nothing.
  virtual void set_tf32(bool on);

 private:
  // Throws Error naming the fix when the file carries no uncertainty calibration.
  void require_uncertainty() const;
  struct Impl;
  struct ExchangeLayers;
  ExchangeLayers exchange_layers(const ExchangeSystem &system, MessageExchange &exchange) const;
  std::unique_ptr<Impl> impl_;
  ModelInfo info_;
  std::string mode_;         // the module's current symmetrization
  bool correction_ = false;  // the module's current correction setting
  int64_t chunk_ = -1;       // the module's current chunk setting
  std::string device_;
  std::string path_;
};

}  // namespace petmd

// Entry point of libpetmd_model.so for callers that dlopen it (see model_loader.h): sets the torch threads (if
// threads > 0) and returns a new Model, or nullptr with *error filled in.
extern "C" PETMD_API petmd::Model *petmd_open_model(const char *path, const char *device, int local_rank, int threads,
                                                    std::string *error);
