/* compute ID group pet/symmetry N GRID: every N steps, the network of pair_style pet as trained against its average
   over rotation grid GRID on the current configuration. Global vector (metal units):
     [1] |E − E_grid| per atom (eV)    [2] mean |F − F_grid| per component (eV/A)
     [3] max |F − F_grid| (eV/A)       [4] std of E over the grid per atom (eV)
   Forces are those of the atoms in the group; energies are of the whole system. Between multiples of N the
   last values are returned without evaluating anything. */

#include "compute_pet_symmetry.h"

#include "atom.h"
#include "comm.h"
#include "error.h"
#include "force.h"
#include "group.h"
#include "memory.h"
#include "pair_pet.h"
#include "update.h"
#include "utils.h"

#include <algorithm>
#include <cmath>
#include <vector>
#include <mpi.h>

using namespace LAMMPS_NS;

ComputePETSymmetry::ComputePETSymmetry(LAMMPS *lmp, int narg, char **arg) : Compute(lmp, narg, arg)
{
  if (narg != 5)
    error->all(FLERR, "Illegal compute pet/symmetry command: expected `compute ID group pet/symmetry N GRID`, "
                      "e.g. `compute sym all pet/symmetry 100 3i`");
  every_ = utils::inumeric(FLERR, arg[3], false, lmp);
  if (every_ < 1) error->all(FLERR, "compute pet/symmetry: N must be at least 1, got {}", every_);
  grid_ = arg[4];
  vector_flag = 1;
  size_vector = 4;
  extvector = 0;
  comm_reverse = 3;
  vector = new double[size_vector]();
}

ComputePETSymmetry::~ComputePETSymmetry()
{
  delete[] vector;
  memory->destroy(dforce_);
}

void ComputePETSymmetry::init()
{
  // the network as trained: the pet style, or the plain term of a multiple-time-stepping hybrid
  pair_ = nullptr;
  for (auto *pet : PairPET::instances(lmp))
    if (!pair_ && !pet->correction()) pair_ = pet;
  if (pair_ == nullptr) error->all(FLERR, "compute pet/symmetry requires pair_style pet");
  // the grid is checked before the run starts, and its cost said
  const auto rotations = pair_->grid_size(grid_, "compute pet/symmetry");
  if (comm->me == 0)
    utils::logmesg(lmp, "compute pet/symmetry: grid {}, {} rotations: {} evaluations of the network every {} steps\n",
                   grid_, rotations, rotations + 1, every_);
}

void ComputePETSymmetry::compute_vector()
{
  invoked_vector = update->ntimestep;
  // on other steps: the values of the last multiple of N, at no cost
  if (computed_step_ >= 0 && (update->ntimestep % every_ != 0 || update->ntimestep == computed_step_)) return;
  computed_step_ = update->ntimestep;

  const int nall = atom->nlocal + atom->nghost;
  if (nall > nmax_) {
    memory->destroy(dforce_);
    nmax_ = atom->nmax;
    memory->create(dforce_, nmax_, 3, "pet/symmetry:dforce");
  }
  for (int i = 0; i < nall; i++) dforce_[i][0] = dforce_[i][1] = dforce_[i][2] = 0.0;

  const auto terms = pair_->symmetry_terms(grid_, dforce_);
  comm->reverse_comm(this);

  const int k = static_cast<int>(terms.grid_weights.size());
  std::vector<double> local(k + 2, 0.0), total(k + 2, 0.0);
  local[0] = terms.plain_energy;
  for (int r = 0; r < k; r++) local[2 + r] = terms.grid_energies[r];
  double fsum = 0.0, fmax = 0.0;
  const int *mask = atom->mask;
  for (int i = 0; i < atom->nlocal; i++) {
    if (!(mask[i] & groupbit)) continue;
    for (int c = 0; c < 3; c++) {
      fsum += std::fabs(dforce_[i][c]);
      fmax = std::max(fmax, std::fabs(dforce_[i][c]));
    }
  }
  local[1] = fsum;
  MPI_Allreduce(local.data(), total.data(), k + 2, MPI_DOUBLE, MPI_SUM, world);
  double fmax_all = 0.0;
  MPI_Allreduce(&fmax, &fmax_all, 1, MPI_DOUBLE, MPI_MAX, world);

  double mean = 0.0, variance = 0.0;
  for (int r = 0; r < k; r++) mean += terms.grid_weights[r] * total[2 + r];
  for (int r = 0; r < k; r++) variance += terms.grid_weights[r] * (total[2 + r] - mean) * (total[2 + r] - mean);
  const double natoms = static_cast<double>(atom->natoms);
  const double ngroup = static_cast<double>(group->count(igroup));
  vector[0] = std::fabs(total[0] - mean) / natoms;
  vector[1] = ngroup > 0 ? total[1] / (3.0 * ngroup) : 0.0;
  vector[2] = fmax_all;
  vector[3] = std::sqrt(std::max(variance, 0.0)) / natoms;
}

int ComputePETSymmetry::pack_reverse_comm(int n, int first, double *buf)
{
  int m = 0;
  for (int i = first; i < first + n; i++)
    for (int c = 0; c < 3; c++) buf[m++] = dforce_[i][c];
  return m;
}

void ComputePETSymmetry::unpack_reverse_comm(int n, int *list, double *buf)
{
  int m = 0;
  for (int i = 0; i < n; i++)
    for (int c = 0; c < 3; c++) dforce_[list[i]][c] += buf[m++];
}
