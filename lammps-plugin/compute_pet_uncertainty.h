/* compute pet/uncertainty: the calibrated uncertainty of pair_style pet's model (docs/uncertainty.md). LAMMPS glue
   only. */
#ifndef LMP_COMPUTE_PET_UNCERTAINTY_H
#define LMP_COMPUTE_PET_UNCERTAINTY_H

#include "compute.h"

namespace LAMMPS_NS {

class ComputePETUncertainty : public Compute {
 public:
  ComputePETUncertainty(class LAMMPS *, int, char **);
  ~ComputePETUncertainty() override;
  void init() override;
  double compute_scalar() override;
  void compute_vector() override;
  void compute_peratom() override;
  double memory_usage() override;
  // the pet style whose prediction this compute judges (set in init)
  const class PairPET *source() const { return pair_; }

 private:
  void gather();

  class PairPET *pair_ = nullptr;
  bigint gathered_step_ = -1;
  double values_[3] = {0.0, 0.0, 0.0};    // sigma_E (eV), sigma_E per atom (eV), max score in the group
  double *score_atom_ = nullptr;
  int nmax_ = 0;
};

}    // namespace LAMMPS_NS

#endif
