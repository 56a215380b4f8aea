/* pair_style pet: LAMMPS glue only. The atoms → graph conversion is petmd::build_domain_graph (cpp/domain_graph.h)
   and every libtorch call is in petmd::Model (cpp/model.h). Documentation: docs/pair_pet.md. */
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
struct SystemView;
}

namespace LAMMPS_NS {

class PairPET : public Pair {
 public:
  PairPET(class LAMMPS *);
  ~PairPET() override;
  void compute(int, int) override;
  void settings(int, char **) override;
  void coeff(int, char **) override;
  void init_style() override;
  double init_one(int, int) override;

  // For compute pet/symmetry: the network as trained against its average over `grid` on this rank's graph. Adds
  // the per-atom force deviation (plain − grid mean) to dforce[nall][3] (ghosts included: reverse-communicate it)
  // and returns this rank's plain energy and the energy of each rotated copy, with the grid weights.
  struct SymmetryTerms {
    double plain_energy = 0.0;
    std::vector<double> grid_energies, grid_weights;
  };
  SymmetryTerms symmetry_terms(const std::string &grid, double **dforce);

 private:
  petmd::SystemView build_system(petmd::DomainGraph &graph);
  void allocate();
  void report_model(int threads) const;

  std::unique_ptr<petmd::Model> model_;
  std::string model_path_;
  std::vector<long> type_z_;          // atomic number of each LAMMPS atom type (index 1..ntypes)
  bool fold_ = true;                   // fold periodic images of local atoms onto them (docs/pair_pet.md)
  bigint seed_ = 0;                    // symmetrize random: torch is seeded with seed_ + step on every rank
  // per-step buffers, kept to avoid reallocation
  std::vector<double> positions_;
  std::vector<int64_t> numbers_;
  std::unique_ptr<bool[]> mask_;
  double cell_[3][3] = {};
};

}    // namespace LAMMPS_NS

#endif
