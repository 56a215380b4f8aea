/* compute pet/symmetry: on-the-fly symmetry error of pair_style pet's model. LAMMPS glue only; see
   docs/pair_pet.md. */
#ifndef LMP_COMPUTE_PET_SYMMETRY_H
#define LMP_COMPUTE_PET_SYMMETRY_H

#include "compute.h"

#include <string>

namespace LAMMPS_NS {

class ComputePETSymmetry : public Compute {
 public:
  ComputePETSymmetry(class LAMMPS *, int, char **);
  ~ComputePETSymmetry() override;
  void init() override;
  void compute_vector() override;
  int pack_reverse_comm(int, int, double *) override;
  void unpack_reverse_comm(int, int *, double *) override;

 private:
  int every_;
  std::string grid_;
  class PairPET *pair_ = nullptr;
  double **dforce_ = nullptr;    // per-atom plain − grid-averaged force, ghosts included until reverse comm
  int nmax_ = 0;
  bigint computed_step_ = -1;
};

}    // namespace LAMMPS_NS

#endif
