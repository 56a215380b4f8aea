/* Message exchange for pair_style pet on LAMMPS's communication. See pet_row_exchange.h and docs/pair_pet.md. */

#include "pet_row_exchange.h"

#include "atom.h"
#include "comm.h"
#include "lammps.h"

#include <algorithm>
#include <mpi.h>

using namespace LAMMPS_NS;

PetRowExchange::PetRowExchange(LAMMPS *lmp, Pair *pair) : lmp_(lmp), pair_(pair) {}

void PetRowExchange::build_graph(const petmd::DomainView<tagint> &view, double cutoff)
{
  graph_ = std::make_unique<petmd::LocalGraph>(petmd::build_local_graph(view, cutoff));
}

petmd::ExchangeSystem PetRowExchange::prepare(const petmd::DomainView<tagint> &view, double cutoff,
                                              const std::vector<long> &type_z)
{
  const int nlocal = lmp_->atom->nlocal;
  const int nall = nlocal + lmp_->atom->nghost;
  const auto &graph = *graph_;
  // every rank describes each atom with the same number of edge slots
  int64_t most = graph.max_neighbors;
  MPI_Allreduce(&most, &slots_, 1, MPI_INT64_T, MPI_MAX, lmp_->world);

  // the identity of every edge slot (neighbour ID, edge vector), so that a rank finds the reverse of its edges
  layout_rows(slots_ * petmd::kIdentityValues);
  petmd::write_edge_identities(graph, lmp_->atom->tag, slots_, rows_.data());
  forward_rows();
  reverse_ = petmd::exchange_reverse_index(graph, view, slots_, rows_.data(), cutoff);

  // which slots any rank needs: marks summed onto the owners, then every copy gets its owner's marks
  layout_rows(slots_);
  std::fill(rows_.begin(), rows_.end(), 0.0);
  petmd::mark_needed_rows(reverse_, graph.n_edges(), nlocal, nall, slots_, rows_.data());
  reverse_rows();
  forward_rows();
  packed_ = std::make_unique<petmd::PackedRows>(petmd::pack_rows(rows_.data(), nall, slots_));
  const int64_t n_ghost_rows = petmd::compact_reverse_index(reverse_, graph.n_edges(), nlocal, nall, slots_, *packed_);

  // the local edges whose tokens travel, in the order of the local packed rows
  sent_edges_.clear();
  for (int i = 0; i < nlocal; i++)
    for (int64_t row = packed_->offsets[i]; row < packed_->offsets[i + 1]; row++)
      sent_edges_.push_back(graph.offsets[i] + packed_->slot[row]);
  int64_t most_packed = 0;
  for (int a = 0; a < nall; a++) most_packed = std::max(most_packed, packed_->offsets[a + 1] - packed_->offsets[a]);
  MPI_Allreduce(&most_packed, &most_packed_, 1, MPI_INT64_T, MPI_MAX, lmp_->world);

  numbers_.resize(nall);
  for (int a = 0; a < nall; a++) numbers_[a] = type_z[lmp_->atom->type[a]];
  petmd::ExchangeSystem system;
  system.n_central = nlocal;
  system.n_all = nall;
  system.atomic_numbers = numbers_.data();
  system.n_edges = graph.n_edges();
  system.edge_index = graph.edge_index.data();
  system.edge_vectors = graph.vectors.data();
  system.reverse = reverse_.data();
  system.n_ghost_rows = n_ghost_rows;
  return system;
}

void PetRowExchange::forward(const double *sent_rows, int64_t d, double *ghost_rows)
{
  const auto &packed = *packed_;
  const int nlocal = lmp_->atom->nlocal;
  const int nall = nlocal + lmp_->atom->nghost;
  layout_packed(d);
  std::copy(sent_rows, sent_rows + packed.offsets[nlocal] * d, rows_.data());    // sent_edges_ order = packed order
  forward_rows();
  std::copy(rows_.data() + packed.offsets[nlocal] * d, rows_.data() + packed.offsets[nall] * d, ghost_rows);
}

void PetRowExchange::reverse(const double *ghost_adjoint, int64_t d, double *sent_adjoint)
{
  const auto &packed = *packed_;
  const int nlocal = lmp_->atom->nlocal;
  const int nall = nlocal + lmp_->atom->nghost;
  layout_packed(d);
  std::fill(rows_.begin(), rows_.begin() + packed.offsets[nlocal] * d, 0.0);
  std::copy(ghost_adjoint, ghost_adjoint + (packed.offsets[nall] - packed.offsets[nlocal]) * d,
            rows_.data() + packed.offsets[nlocal] * d);
  reverse_rows();
  std::copy(rows_.data(), rows_.data() + packed.offsets[nlocal] * d, sent_adjoint);
}

// rows_ holds one row of values per atom (local and ghost), atom a's at row_start_[a] .. row_start_[a+1]
void PetRowExchange::layout_rows(int64_t width)
{
  const int nall = lmp_->atom->nlocal + lmp_->atom->nghost;
  row_start_.resize(nall + 1);
  for (int a = 0; a <= nall; a++) row_start_[a] = a * width;
  longest_row_ = width;
  rows_.resize(row_start_[nall]);
}

// the packed edge slots, d values each
void PetRowExchange::layout_packed(int64_t d)
{
  const int nall = lmp_->atom->nlocal + lmp_->atom->nghost;
  row_start_.resize(nall + 1);
  for (int a = 0; a <= nall; a++) row_start_[a] = packed_->offsets[a] * d;
  longest_row_ = most_packed_ * d;
  rows_.resize(row_start_[nall]);
}

// Local rows out to the ghosts that image them (forward), or ghost rows added into the atoms they image
// (reverse): at most kValuesPerCall values of each row per LAMMPS communication call.
void PetRowExchange::forward_rows()
{
  for (first_value_ = 0; first_value_ < longest_row_; first_value_ += kValuesPerCall)
    lmp_->comm->forward_comm(pair_, kValuesPerCall);
}

void PetRowExchange::reverse_rows()
{
  for (first_value_ = 0; first_value_ < longest_row_; first_value_ += kValuesPerCall)
    lmp_->comm->reverse_comm(pair_, kValuesPerCall);
}

// this call's part of atom a's row: values [first, first + count) of rows_
void PetRowExchange::row_part(int a, int64_t &first, int64_t &count) const
{
  first = row_start_[a] + first_value_;
  count = std::max<int64_t>(0, std::min<int64_t>(kValuesPerCall, row_start_[a + 1] - first));
}

int PetRowExchange::pack_forward(int n, const int *list, double *buf) const
{
  int64_t m = 0, first, count;
  for (int k = 0; k < n; k++) {
    row_part(list[k], first, count);
    std::copy(rows_.data() + first, rows_.data() + first + count, buf + m);
    m += count;
  }
  return static_cast<int>(m);
}

void PetRowExchange::unpack_forward(int n, int first_atom, const double *buf)
{
  int64_t m = 0, first, count;
  for (int k = 0; k < n; k++) {
    row_part(first_atom + k, first, count);
    std::copy(buf + m, buf + m + count, rows_.data() + first);
    m += count;
  }
}

int PetRowExchange::pack_reverse(int n, int first_atom, double *buf) const
{
  int64_t m = 0, first, count;
  for (int k = 0; k < n; k++) {
    row_part(first_atom + k, first, count);
    std::copy(rows_.data() + first, rows_.data() + first + count, buf + m);
    m += count;
  }
  return static_cast<int>(m);
}

void PetRowExchange::unpack_reverse(int n, const int *list, const double *buf)
{
  int64_t m = 0, first, count;
  for (int k = 0; k < n; k++) {
    row_part(list[k], first, count);
    double *row = rows_.data() + first;
    for (int64_t c = 0; c < count; c++) row[c] += buf[m + c];
    m += count;
  }
}
