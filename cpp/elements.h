// Standard atomic masses, for checks of what a simulation gives each element (no LAMMPS or torch types).
#pragma once

#include <cstdint>

namespace petmd {

// IUPAC standard atomic weight of element z (1..118) in g/mol, to 4 significant figures (the mass number of the
// longest-lived isotope where there is no standard weight); 0 for any other z.
double standard_mass(int64_t z);

}  // namespace petmd
