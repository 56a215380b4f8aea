// Registers pair_style pet with LAMMPS when petplugin.so is loaded.
#include "lammpsplugin_abi.h"
#include "pair_pet.h"

using namespace LAMMPS_NS;

static Pair *pet_creator(LAMMPS *lmp) { return new PairPET(lmp); }

extern "C" __attribute__((visibility("default"))) void lammpsplugin_init(void *lmp, void *handle, void *regfunc) {
  lammpsplugin_t plugin;
  plugin.version = PETMD_LAMMPS_VERSION;
  plugin.style = "pair";
  plugin.name = "pet";
  plugin.info = "PET machine-learning potential (petmd " PETMD_VERSION ")";
  plugin.author = "petmd developers";
  plugin.creator.v1 = (lammpsplugin_factory1 *) &pet_creator;
  plugin.handle = handle;
  (*(lammpsplugin_regfunc) regfunc)(&plugin, lmp);
}
