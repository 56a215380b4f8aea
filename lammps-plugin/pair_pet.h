/* pair_style pet: LAMMPS glue only. The atoms → graph conversion is petmd::build_domain_graph (cpp/domain_graph.h),
   the message exchange between ranks PetRowExchange (pet_row_exchange.h) and every libtorch call is in petmd::Model
   (cpp/model.h). Documentation: docs/pair_pet.md. */
#ifndef LMP_PAIR_PET_H
#define LMP_PAIR_PET_H

#include "pair.h"

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace petmd {
class Model;
struct DomainGraph;
struct Result;
struct ExchangeSystem;
struct SystemView;
template <typename Tag> struct DomainView;
}    // namespace petmd

namespace LAMMPS_NS {
class PetRowExchange;

class PairPET : public Pair {
 public:
  PairPET(class LAMMPS *);
  ~PairPET() override;
  void compute(int, int) override;
  void settings(int, char **) override;
  void coeff(int, char **) override;
  void init_style() override;
  double init_one(int, int) override;
  int pack_forward_comm(int, int *, double *, int, int *) override;
  void unpack_forward_comm(int, int, double *) override;
  int pack_reverse_comm(int, int, double *) override;
  void unpack_reverse_comm(int, int *, double *) override;

  // For compute pet/symmetry: the network as trained against its average over `grid` on this rank's graph. Adds
  // the per-atom force deviation (plain − grid mean) to dforce[nall][3] (ghosts included: reverse-communicate it)
  // and returns this rank's plain energy and the energy of each rotated copy, with the grid weights.
  struct SymmetryTerms {
    double plain_energy = 0.0;
    std::vector<double> grid_energies, grid_weights;
  };
  SymmetryTerms symmetry_terms(const std::string &grid, double **dforce);
  // Rotations in `grid`; an unknown or too large grid is an error of `context` on every rank.
  int64_t grid_size(const std::string &grid, const char *context);

  // For compute pet/uncertainty (docs/uncertainty.md): this rank's share of the uncertainty at the current step, the
  // local atoms' summed last-layer features and each local atom's extrapolation score. From this step's force evaluation when
  // a pet/uncertainty compute asked for this step, else from an evaluation of its own (errors name `context`).
  struct UncertaintyShare {
    bigint step = -1;
    std::vector<double> features;
    std::vector<double> atom_extrapolation;
  };
  const UncertaintyShare &uncertainty_share(const char *context);
  // sigma (eV) of an energy from its summed features (the shares summed over ranks).
  double energy_uncertainty(const std::vector<double> &features, const char *context);
  // An error of `context` naming the fix when this style cannot give an uncertainty (no calibration in the file,
  // message exchange between ranks).
  void check_uncertainty(const char *context);

  // Every pet style of this run (the pair style, or the pet sub-styles of a hybrid); whether one is the correction
  // term of multiple time stepping (`correction yes`).
  static std::vector<PairPET *> instances(class LAMMPS *lmp);
  bool correction() const { return correction_; }

 private:
  template <typename Call> auto bridged(const char *context, Call &&call) -> decltype(call());
  template <typename Call> auto bridged_on_all_ranks(const char *context, Call &&call) -> decltype(call());
  petmd::SystemView build_system(petmd::DomainGraph &graph);
  petmd::DomainView<tagint> domain_view();
  petmd::Result evaluate_exchanged(const char *context, bool with_uncertainty);
  petmd::ExchangeSystem prepare_exchange();
  void tally(const petmd::Result &result);
  void seed_random_rotation();
  bool uncertainty_wanted();
  void keep_uncertainty(const petmd::Result *result);
  void allocate();
  void report_model(int threads);
  void require_every_pair();
  void check_type_masses();
  void find_partner();
  void check_level();
  petmd::Model &model();

  std::shared_ptr<petmd::Model> model_;    // shared by the sub-styles that load the same file (shared_model)
  std::string model_path_;
  std::string mode_;              // symmetrize: none, random, grid:G or ecse
  bool correction_ = false;       // correction yes: return (mode − as trained), the slow term of multiple time stepping
  int64_t chunk_ = -1;            // chunk N; -1: the model's default
  PairPET *partner_ = nullptr;    // the correction's plain term (init_style)
  bigint computed_ = 0;           // compute() calls since init_style, for check_level
  std::vector<long> type_z_;      // atomic number of each LAMMPS atom type (index 1..ntypes)
  bool fold_ = true;              // fold periodic images of local atoms onto them (docs/pair_pet.md)
  int exchange_request_ = -1;     // exchange yes (1) | no (0) | auto (-1)
  bool tf32_ = false;             // tf32 yes: TF32 float32 matrix products on a CUDA device
  // set in init_style when this run exchanges messages between ranks: the exchange on LAMMPS's communication
  std::unique_ptr<PetRowExchange> exchange_rows_;
  bigint seed_ = 0;    // symmetrize random: torch is seeded with seed_ + step on every rank
  UncertaintyShare uncertainty_;
  // per-step buffers, kept to avoid reallocation
  std::vector<double> positions_;
  std::vector<int64_t> numbers_;
  std::unique_ptr<bool[]> mask_;
  double cell_[3][3] = {};
};

}    // namespace LAMMPS_NS

#endif
