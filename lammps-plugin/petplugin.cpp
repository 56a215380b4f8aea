// Registers pair_style pet with LAMMPS when petplugin.so is loaded.
#include "lammpsplugin_abi.h"
#include "compute_pet_symmetry.h"
#include "compute_pet_uncertainty.h"
#include "pair_pet.h"

using namespace LAMMPS_NS;

static Pair *pet_creator(LAMMPS *lmp)
{
  return new PairPET(lmp);
}

static Compute *pet_symmetry_creator(LAMMPS *lmp, int narg, char **arg)
{
  return new ComputePETSymmetry(lmp, narg, arg);
}

static Compute *pet_uncertainty_creator(LAMMPS *lmp, int narg, char **arg)
{
  return new ComputePETUncertainty(lmp, narg, arg);
}

extern "C" __attribute__((visibility("default"))) void lammpsplugin_init(void *lmp, void *handle, void *regfunc)
{
  lammpsplugin_t plugin;
  plugin.version = PETMD_LAMMPS_VERSION;
  plugin.style = "pair";
  plugin.name = "pet";
  plugin.info = "PET machine-learning potential (petmd " PETMD_VERSION ")";
  plugin.author = "petmd developers";
  plugin.creator.v1 = (lammpsplugin_factory1 *)&pet_creator;
  plugin.handle = handle;
  (*(lammpsplugin_regfunc)regfunc)(&plugin, lmp);

  plugin.style = "compute";
  plugin.name = "pet/symmetry";
  plugin.info = "on-the-fly symmetry error of pair_style pet (petmd " PETMD_VERSION ")";
  plugin.creator.v2 = (lammpsplugin_factory2 *)&pet_symmetry_creator;
  (*(lammpsplugin_regfunc)regfunc)(&plugin, lmp);

  plugin.name = "pet/uncertainty";
  plugin.info = "calibrated uncertainty of pair_style pet (petmd " PETMD_VERSION ")";
  plugin.creator.v2 = (lammpsplugin_factory2 *)&pet_uncertainty_creator;
  (*(lammpsplugin_regfunc)regfunc)(&plugin, lmp);
}
