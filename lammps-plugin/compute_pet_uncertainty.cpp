/* compute ID group pet/uncertainty: the calibrated last-layer uncertainty (docs/uncertainty.md) of pair_style pet's
   prediction, on the steps that ask for it (thermo, dump, fix halt, variables). Metal units:
     scalar      sigma of the whole system's energy (eV)
     vector [1]  the same; [2] it per atom (eV/atom); [3] the largest extrapolation score of an atom of the group
     per atom    the extrapolation score gamma_i of atom i's environment: 1 for a typical atom of the validation
                 frames, >> 1 for one unlike the training data's; the local flag (0 outside the group)
   On those steps pair_style pet computes the uncertainty with the forces; on any other it evaluates once more. */

#include "compute_pet_uncertainty.h"

#include "atom.h"
#include "comm.h"
#include "error.h"
#include "memory.h"
#include "pair_pet.h"
#include "update.h"
#include "utils.h"

#include <algorithm>
#include <vector>
#include <mpi.h>

using namespace LAMMPS_NS;

ComputePETUncertainty::ComputePETUncertainty(LAMMPS *lmp, int narg, char **arg) : Compute(lmp, narg, arg)
{
  if (narg != 3)
    error->all(FLERR, "Illegal compute pet/uncertainty command: it takes no arguments after the style "
                      "(`compute ID group pet/uncertainty`)");
  scalar_flag = 1;
  vector_flag = 1;
  size_vector = 3;
  extscalar = 0;
  extvector = 0;
  peratom_flag = 1;
  size_peratom_cols = 0;
  timeflag = 1;    // LAMMPS tells it the steps it is wanted on, which pair_style pet reads (matchstep)
  vector = values_;
}

ComputePETUncertainty::~ComputePETUncertainty()
{
  memory->destroy(score_atom_);
}

void ComputePETUncertainty::init()
{
  // the prediction the run integrates: the pet style, or the correction term of a multiple-time-stepping hybrid,
  // whose symmetrized mode then gives the uncertainty
  const auto styles = PairPET::instances(lmp);
  pair_ = nullptr;
  for (auto *pet : styles)
    if (pet->correction()) pair_ = pet;
  if (pair_ == nullptr && styles.size() == 1) pair_ = styles.front();
  if (styles.empty()) error->all(FLERR, "compute pet/uncertainty requires pair_style pet");
  if (pair_ == nullptr)
    error->all(FLERR,
               "compute pet/uncertainty: this run has {} pair_style pet sub-styles and none is a correction "
               "term: it judges one model, so use one pet sub-style",
               styles.size());
  pair_->check_uncertainty("compute pet/uncertainty");
}

void ComputePETUncertainty::gather()
{
  if (gathered_step_ == update->ntimestep) return;
  gathered_step_ = update->ntimestep;
  const auto &share = pair_->uncertainty_share("compute pet/uncertainty");
  std::vector<double> total(share.features.size(), 0.0);
  MPI_Allreduce(share.features.data(), total.data(), static_cast<int>(total.size()), MPI_DOUBLE, MPI_SUM, world);
  double local_max = 0.0;
  const int *mask = atom->mask;
  for (int i = 0; i < atom->nlocal; i++)
    if (mask[i] & groupbit) local_max = std::max(local_max, share.atom_extrapolation[i]);
  double max_score = 0.0;
  MPI_Allreduce(&local_max, &max_score, 1, MPI_DOUBLE, MPI_MAX, world);
  const double sigma = pair_->energy_uncertainty(total, "compute pet/uncertainty");
  values_[0] = sigma;
  values_[1] = atom->natoms > 0 ? sigma / static_cast<double>(atom->natoms) : 0.0;
  values_[2] = max_score;
}

double ComputePETUncertainty::compute_scalar()
{
  invoked_scalar = update->ntimestep;
  gather();
  scalar = values_[0];
  return scalar;
}

void ComputePETUncertainty::compute_vector()
{
  invoked_vector = update->ntimestep;
  gather();
}

void ComputePETUncertainty::compute_peratom()
{
  invoked_peratom = update->ntimestep;
  gather();
  if (atom->nmax > nmax_) {
    memory->destroy(score_atom_);
    nmax_ = atom->nmax;
    memory->create(score_atom_, nmax_, "pet/uncertainty:score");
    vector_atom = score_atom_;
  }
  const auto &share = pair_->uncertainty_share("compute pet/uncertainty");
  const int *mask = atom->mask;
  for (int i = 0; i < atom->nlocal; i++) score_atom_[i] = (mask[i] & groupbit) ? share.atom_extrapolation[i] : 0.0;
}

double ComputePETUncertainty::memory_usage()
{
  return static_cast<double>(nmax_) * sizeof(double);
}
