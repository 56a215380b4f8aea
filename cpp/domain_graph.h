// The graph a model evaluates for one domain of a domain-decomposed simulation (LAMMPS's local + ghost atoms),
// built from plain arrays so it can be tested without LAMMPS (python/petmd/_bridge: build_domain_graph).
//
// Folding: a ghost that is a periodic image of an atom this domain already holds (same atom ID) is not a node of
// its own; its edges go to that atom with an integer cell shift. Every atom ID becomes exactly one node: the local
// atoms first (node i = atom i for i < nlocal), then one node per atom owned elsewhere (its first ghost image).
// The result is the periodic graph of all atoms this domain sees, each edge (i, j, S) once, which gives the same
// local energies, forces and virial as the explicit ghost graph: every local atom's receptive field is complete,
// and an atom owned elsewhere collects the union of what its images see (all of it true edges, no double counts).
// A one-domain run of a 192-atom box therefore evaluates 192 nodes instead of the thousands of images in its shell.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace petmd {

// The closest two atoms may come, Å: nearer, they are one atom listed twice or a simulation that has blown up, and
// the model would extrapolate without a word (python/petmd/neighbors.py holds the same bound).
constexpr double kMinSeparation = 0.1;

// Throws petmd::Error naming atoms tag_i and tag_j when their squared distance rsq is below kMinSeparation².
void check_separation(double rsq, int64_t tag_i, int64_t tag_j);

template <typename Tag>
struct DomainView {
  int64_t nlocal = 0;         // atoms 0..nlocal-1 are owned by this domain
  int64_t nall = 0;           // local + ghost atoms
  const double *x = nullptr;  // [nall, 3] positions, Å (ghost images at their image positions)
  const Tag *tags = nullptr;  // [nall] atom IDs; images share their atom's ID
  double cell[3][3] = {};     // rows a, b, c (LAMMPS: a = (xprd,0,0), b = (xy,yprd,0), c = (xz,yz,zprd))
  bool periodic[3] = {false, false, false};
  // full neighbour lists (with ghosts' lists): atom listed[k] has neighbours[listed[k]][0 .. count[listed[k]])
  int64_t n_listed = 0;
  const int *listed = nullptr;
  const int *count = nullptr;
  const int *const *neighbors = nullptr;
  int neighmask = ~0;  // LAMMPS keeps special-bond bits in the top bits of neighbour indices
};

struct DomainGraph {
  std::vector<int64_t> node_atom;    // [n_nodes] the atom whose position and type a node takes
  std::vector<int64_t> edge_index;   // [2, E]: sources, then destinations
  std::vector<int64_t> cell_shifts;  // [E, 3]: x_ij = x_j - x_i + S·cell
  int64_t n_folded = 0;              // ghosts folded onto a node instead of becoming one
  int64_t n_nodes() const { return static_cast<int64_t>(node_atom.size()); }
  int64_t n_edges() const { return static_cast<int64_t>(cell_shifts.size() / 3); }
};

// Edges strictly shorter than `cutoff`. With fold = false every atom is a node and every shift is zero (the
// explicit ghost graph; for checks). Throws petmd::Error on inconsistent input (duplicate IDs, an "image" that
// is not at a lattice translation of its atom).
template <typename Tag>
DomainGraph build_domain_graph(const DomainView<Tag> &domain, double cutoff, bool fold);

}  // namespace petmd
