#include "message_exchange.h"

#include <algorithm>
#include <cmath>
#include <string>
#include <unordered_map>

#include "domain_graph.h"
#include "model.h"

namespace petmd {
namespace {

// Two descriptions of one edge in opposite directions: vectors equal up to the round-off of image positions.
constexpr double kSameVector = 1e-6;  // Å
constexpr double kNearCutoff = 1e-9;  // Å

bool opposite(const double *a, const double *b) {
  for (int c = 0; c < 3; c++)
    if (std::fabs(a[c] + b[c]) > kSameVector) return false;
  return true;
}

}  // namespace

template <typename Tag>
LocalGraph build_local_graph(const DomainView<Tag> &d, double cutoff) {
  LocalGraph graph;
  graph.n_central = d.nlocal;
  const double cutsq = cutoff * cutoff;
  std::vector<bool> listed(static_cast<size_t>(d.nlocal), false);
  for (int64_t k = 0; k < d.n_listed; k++)
    if (d.listed[k] < d.nlocal) listed[d.listed[k]] = true;
  // atom by atom, so that each atom's edges are contiguous whatever the order of the list
  std::vector<int64_t> neighbor;
  graph.offsets.assign(static_cast<size_t>(d.nlocal) + 1, 0);
  for (int64_t i = 0; i < d.nlocal; i++) {
    for (int jj = 0; listed[i] && jj < d.count[i]; jj++) {
      const int j = d.neighbors[i][jj] & d.neighmask;
      double v[3], rsq = 0.0;
      for (int c = 0; c < 3; c++) {
        v[c] = d.x[3 * j + c] - d.x[3 * i + c];
        rsq += v[c] * v[c];
      }
      check_separation(rsq, d.tags[i], d.tags[j]);
      if (!(rsq < cutsq)) continue;
      neighbor.push_back(j);
      graph.vectors.insert(graph.vectors.end(), v, v + 3);
    }
    graph.offsets[i + 1] = static_cast<int64_t>(neighbor.size());
    graph.max_neighbors = std::max(graph.max_neighbors, graph.offsets[i + 1] - graph.offsets[i]);
  }
  const int64_t n_edges = graph.offsets[d.nlocal];
  graph.edge_index.resize(2 * n_edges);
  for (int64_t i = 0; i < d.nlocal; i++)
    std::fill(graph.edge_index.begin() + graph.offsets[i], graph.edge_index.begin() + graph.offsets[i + 1], i);
  std::copy(neighbor.begin(), neighbor.end(), graph.edge_index.begin() + n_edges);
  return graph;
}

template <typename Tag>
void write_edge_identities(const LocalGraph &graph, const Tag *tags, int64_t slots, double *rows) {
  const int64_t n_edges = graph.n_edges();
  for (int64_t i = 0; i < graph.n_central; i++) {
    double *row = rows + i * slots * kIdentityValues;
    std::fill(row, row + slots * kIdentityValues, 0.0);
    for (int64_t e = graph.offsets[i]; e < graph.offsets[i + 1]; e++, row += kIdentityValues) {
      row[0] = static_cast<double>(tags[graph.edge_index[n_edges + e]]);
      for (int c = 0; c < 3; c++) row[1 + c] = graph.vectors[3 * e + c];
    }
  }
}

template <typename Tag>
std::vector<int64_t> exchange_reverse_index(const LocalGraph &graph, const DomainView<Tag> &d, int64_t slots,
                                            const double *identity_rows, double cutoff) {
  const int64_t n_edges = graph.n_edges();
  const int64_t nlocal = graph.n_central;
  const int64_t zero_row = n_edges + (d.nall - nlocal) * slots;
  // which atom holds the rows of an ID: the atom itself if local, else its first ghost image
  std::unordered_map<int64_t, int64_t> holder;
  holder.reserve(static_cast<size_t>(d.nall));
  for (int64_t a = 0; a < d.nall; a++) holder.emplace(static_cast<int64_t>(d.tags[a]), a);

  std::vector<int64_t> reverse(static_cast<size_t>(n_edges), -1);
  for (int64_t e = 0; e < n_edges; e++) {
    const int64_t i = graph.edge_index[e];
    const int64_t j = graph.edge_index[n_edges + e];
    const double tag_i = static_cast<double>(d.tags[i]);
    const double *x = graph.vectors.data() + 3 * e;
    const int64_t a = holder.at(static_cast<int64_t>(d.tags[j]));
    if (a < nlocal) {
      for (int64_t r = graph.offsets[a]; r < graph.offsets[a + 1]; r++) {
        if (static_cast<double>(d.tags[graph.edge_index[n_edges + r]]) == tag_i &&
            opposite(graph.vectors.data() + 3 * r, x)) {
          reverse[e] = r;
          break;
        }
      }
    } else {
      const double *row = identity_rows + a * slots * kIdentityValues;
      for (int64_t s = 0; s < slots; s++, row += kIdentityValues) {
        if (row[0] == tag_i && opposite(row + 1, x)) {
          reverse[e] = n_edges + (a - nlocal) * slots + s;
          break;
        }
      }
    }
    if (reverse[e] >= 0) continue;
    const double r = std::sqrt(x[0] * x[0] + x[1] * x[1] + x[2] * x[2]);
    if (r > cutoff - kNearCutoff) {
      reverse[e] = zero_row;
      continue;
    }
    throw Error("the edge from atom ID " + std::to_string(d.tags[i]) + " to atom ID " + std::to_string(d.tags[j]) +
                " (" + std::to_string(r) + " A) has no reverse edge in the domain that holds atom ID " +
                std::to_string(d.tags[j]) +
                ": the domains disagree on their atoms' positions (atom IDs must be "
                "unique; use `pair_style pet ... exchange no` to run without message exchange)");
  }
  return reverse;
}

void mark_needed_rows(const std::vector<int64_t> &reverse, int64_t n_edges, int64_t nlocal, int64_t nall, int64_t slots,
                      double *needed) {
  const int64_t ghost_rows = (nall - nlocal) * slots;  // the row after them is the zero row
  for (const int64_t r : reverse)
    if (r >= n_edges && r < n_edges + ghost_rows) needed[nlocal * slots + (r - n_edges)] += 1.0;
}

PackedRows pack_rows(const double *needed, int64_t nall, int64_t slots) {
  PackedRows packed;
  packed.offsets.assign(static_cast<size_t>(nall) + 1, 0);
  packed.row_of.assign(static_cast<size_t>(nall * slots), -1);
  for (int64_t a = 0; a < nall; a++) {
    packed.offsets[a + 1] = packed.offsets[a];
    for (int64_t s = 0; s < slots; s++) {
      if (needed[a * slots + s] > 0.5) {
        packed.row_of[a * slots + s] = packed.offsets[a + 1]++;
        packed.slot.push_back(s);
      }
    }
  }
  return packed;
}

int64_t compact_reverse_index(std::vector<int64_t> &reverse, int64_t n_edges, int64_t nlocal, int64_t nall,
                              int64_t slots, const PackedRows &packed) {
  const int64_t zero_row = n_edges + (nall - nlocal) * slots;
  const int64_t first_ghost_row = packed.offsets[nlocal];
  const int64_t n_ghost_rows = packed.offsets[nall] - first_ghost_row;
  for (auto &r : reverse) {
    if (r < n_edges) continue;
    if (r == zero_row) {
      r = n_edges + n_ghost_rows;
      continue;
    }
    const int64_t row = packed.row_of[nlocal * slots + (r - n_edges)];
    if (row < 0) throw Error("internal error: a ghost edge row that this domain uses was not exchanged");
    r = n_edges + row - first_ghost_row;
  }
  return n_ghost_rows;
}

template LocalGraph build_local_graph<int>(const DomainView<int> &, double);
template LocalGraph build_local_graph<int64_t>(const DomainView<int64_t> &, double);
template void write_edge_identities<int>(const LocalGraph &, const int *, int64_t, double *);
template void write_edge_identities<int64_t>(const LocalGraph &, const int64_t *, int64_t, double *);
template std::vector<int64_t> exchange_reverse_index<int>(const LocalGraph &, const DomainView<int> &, int64_t,
                                                          const double *, double);
template std::vector<int64_t> exchange_reverse_index<int64_t>(const LocalGraph &, const DomainView<int64_t> &, int64_t,
                                                              const double *, double);

}  // namespace petmd
