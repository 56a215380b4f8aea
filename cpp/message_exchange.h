// Message exchange between domains (docs/pair_pet.md, "exchange"): each domain evaluates the network on its own
// atoms only, and between message-passing layers trades edge tokens with the domains that hold its ghost atoms.
// What crosses domains per ghost atom is one row per edge of that atom, in its owner's edge order: first the
// edges' identities (neighbour ID, edge vector), then, per layer, their output tokens (forward) and the adjoints of
// those tokens (reverse). This file holds the plain-array part, testable without LAMMPS
// (petmd._bridge.local_graph, tested in tests/test_bridge.py): the local edge list, the identity rows, and
// where each local edge finds the output token of its reverse edge.
#pragma once

#include <cstdint>
#include <vector>

#include "domain_graph.h"

namespace petmd {

struct LocalGraph {
  int64_t n_central = 0;            // the domain's own atoms: 0..n_central-1
  std::vector<int64_t> edge_index;  // [2, E]: central atom, then the neighbour (local or ghost atom index)
  std::vector<int64_t> offsets;     // [n_central + 1]: edges of atom i are offsets[i] .. offsets[i+1]
  std::vector<double> vectors;      // [E, 3] x_e = x_j - x_i (ghosts at their image positions)
  int64_t max_neighbors = 0;        // the largest edge count of one atom
  int64_t n_edges() const { return static_cast<int64_t>(vectors.size() / 3); }
};

// Edges strictly shorter than `cutoff` from the neighbour lists of the local atoms (ghosts' lists are not used).
template <typename Tag>
LocalGraph build_local_graph(const DomainView<Tag> &domain, double cutoff);

// Values per edge slot in the identity rows: neighbour ID and the edge vector.
constexpr int64_t kIdentityValues = 4;

// Fills the rows of the local atoms in `rows` [nall, slots, kIdentityValues]: slot s of atom i describes its s-th
// edge (neighbour ID, x_e); unused slots hold ID 0. Ghost rows are left for the exchange to fill.
template <typename Tag>
void write_edge_identities(const LocalGraph &graph, const Tag *tags, int64_t slots, double *rows);

// For each local edge i→j, the row holding the output token of its reverse edge j→i among
//   [the E local edges | `slots` rows per ghost atom (ghost g = atom nlocal + g, in its owner's order) | one zero row].
// A reverse edge of a local atom is a local edge; one of an atom held elsewhere is found in the identity rows of its
// first ghost image (every image carries the same rows). Needs the ghosts' identity rows (after the exchange).
// An edge within 1e-9 Å of the cutoff whose reverse the other domain dropped (round-off in the image positions)
// gets the zero row: f_c vanishes there, so its message does not matter. Any other missing reverse edge throws
// petmd::Error.
template <typename Tag>
std::vector<int64_t> exchange_reverse_index(const LocalGraph &graph, const DomainView<Tag> &domain, int64_t slots,
                                            const double *identity_rows, double cutoff);

// Which edge rows actually cross domains. Each domain marks the ghost rows its reverse index uses; summed onto the
// owners (reverse communication) and sent back out (forward), every copy of an atom knows the rows that any domain
// needs, and the tokens of only those rows travel: about a fifth of all rows in liquid water.
struct PackedRows {
  std::vector<int64_t> offsets;  // [nall + 1]: packed rows of atom a are offsets[a] .. offsets[a+1]
  std::vector<int64_t> slot;     // [offsets[nall]]: the edge slot of each packed row
  std::vector<int64_t> row_of;   // [nall * slots]: packed row of (atom, slot), -1 if it does not travel
};

// Marks (adds 1 to) needed[a * slots + s] for every ghost row (atom a = nlocal + g, slot s) that `reverse` uses.
void mark_needed_rows(const std::vector<int64_t> &reverse, int64_t n_edges, int64_t nlocal, int64_t nall, int64_t slots,
                      double *needed);

// The packed layout of the rows marked in needed [nall, slots] (> 0: travels).
PackedRows pack_rows(const double *needed, int64_t nall, int64_t slots);

// `reverse` (as from exchange_reverse_index) re-pointed into [E local | the ghosts' packed rows | one zero row].
// Returns the number of ghost packed rows.
int64_t compact_reverse_index(std::vector<int64_t> &reverse, int64_t n_edges, int64_t nlocal, int64_t nall,
                              int64_t slots, const PackedRows &packed);

}  // namespace petmd
