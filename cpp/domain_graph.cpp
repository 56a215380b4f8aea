#include "domain_graph.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <string>
#include <tuple>
#include <unordered_map>

#include "model.h"

namespace petmd {

void check_separation(double rsq, int64_t tag_i, int64_t tag_j) {
  if (rsq >= kMinSeparation * kMinSeparation) return;
  char distances[64];
  std::snprintf(distances, sizeof(distances), "%.3g A apart, closer than %g A", std::sqrt(rsq), kMinSeparation);
  throw Error("atoms with IDs " + std::to_string(tag_i) + " and " + std::to_string(tag_j) + " are " + distances +
              ": an atom listed twice in the input, or a simulation that has blown up (check the timestep and the "
              "thermo output before this step)");
}

namespace {

using Shift = std::array<int64_t, 3>;

struct Edge {
  int64_t i, j;
  Shift s;
  bool operator<(const Edge &o) const { return std::tie(i, j, s) < std::tie(o.i, o.j, o.s); }
  bool operator==(const Edge &o) const { return i == o.i && j == o.j && s == o.s; }
};

// inverse of the matrix whose rows are the cell vectors; zero rows (non-periodic, no extent) stay harmless
std::array<std::array<double, 3>, 3> inverse(const double h[3][3]) {
  std::array<std::array<double, 3>, 3> inv{};
  const double det = h[0][0] * (h[1][1] * h[2][2] - h[1][2] * h[2][1]) -
                     h[0][1] * (h[1][0] * h[2][2] - h[1][2] * h[2][0]) +
                     h[0][2] * (h[1][0] * h[2][1] - h[1][1] * h[2][0]);
  if (det == 0.0) return inv;
  inv[0][0] = (h[1][1] * h[2][2] - h[1][2] * h[2][1]) / det;
  inv[0][1] = (h[0][2] * h[2][1] - h[0][1] * h[2][2]) / det;
  inv[0][2] = (h[0][1] * h[1][2] - h[0][2] * h[1][1]) / det;
  inv[1][0] = (h[1][2] * h[2][0] - h[1][0] * h[2][2]) / det;
  inv[1][1] = (h[0][0] * h[2][2] - h[0][2] * h[2][0]) / det;
  inv[1][2] = (h[0][2] * h[1][0] - h[0][0] * h[1][2]) / det;
  inv[2][0] = (h[1][0] * h[2][1] - h[1][1] * h[2][0]) / det;
  inv[2][1] = (h[0][1] * h[2][0] - h[0][0] * h[2][1]) / det;
  inv[2][2] = (h[0][0] * h[1][1] - h[0][1] * h[1][0]) / det;
  return inv;
}

}  // namespace

template <typename Tag>
DomainGraph build_domain_graph(const DomainView<Tag> &d, double cutoff, bool fold) {
  const int64_t nall = d.nall;
  const double *x = d.x;
  DomainGraph graph;
  std::vector<int64_t> node_of(static_cast<size_t>(nall));
  std::vector<Shift> shift_of(static_cast<size_t>(nall), Shift{0, 0, 0});
  bool foreign_images = false;  // an atom owned elsewhere seen through several images: edges may repeat

  if (!fold) {
    for (int64_t i = 0; i < nall; i++) node_of[i] = i;
    graph.node_atom.resize(static_cast<size_t>(nall));
    for (int64_t i = 0; i < nall; i++) graph.node_atom[i] = i;
  } else {
    const auto hinv = inverse(d.cell);
    std::unordered_map<int64_t, int64_t> node_of_tag;
    node_of_tag.reserve(static_cast<size_t>(nall));
    for (int64_t i = 0; i < d.nlocal; i++) {
      if (!node_of_tag.emplace(static_cast<int64_t>(d.tags[i]), i).second)
        throw Error("atom ID " + std::to_string(d.tags[i]) + " is held by two local atoms: atom IDs must be unique");
      node_of[i] = i;
      graph.node_atom.push_back(i);
    }
    for (int64_t i = d.nlocal; i < nall; i++) {
      auto found = node_of_tag.find(static_cast<int64_t>(d.tags[i]));
      if (found == node_of_tag.end()) {
        node_of[i] = graph.n_nodes();
        node_of_tag.emplace(static_cast<int64_t>(d.tags[i]), node_of[i]);
        graph.node_atom.push_back(i);
        continue;
      }
      const int64_t node = found->second;
      const int64_t a = graph.node_atom[node];
      double delta[3], residual[3];
      for (int c = 0; c < 3; c++) delta[c] = x[3 * i + c] - x[3 * a + c];
      Shift s{0, 0, 0};
      for (int k = 0; k < 3; k++) {
        if (!d.periodic[k]) continue;
        const double frac = delta[0] * hinv[0][k] + delta[1] * hinv[1][k] + delta[2] * hinv[2][k];
        s[k] = static_cast<int64_t>(std::llround(frac));
      }
      double err = 0.0;
      for (int c = 0; c < 3; c++) {
        residual[c] = delta[c] - (s[0] * d.cell[0][c] + s[1] * d.cell[1][c] + s[2] * d.cell[2][c]);
        err = std::max(err, std::fabs(residual[c]));
      }
      if (err > 1e-6 * (1.0 + std::fabs(delta[0]) + std::fabs(delta[1]) + std::fabs(delta[2])))
        throw Error("ghost atom with ID " + std::to_string(d.tags[i]) +
                    " is not a periodic image of the atom with that ID (off a lattice translation by " +
                    std::to_string(err) + " Å): atom IDs must be unique");
      node_of[i] = node;
      shift_of[i] = s;
      graph.n_folded++;
      if (node >= d.nlocal) foreign_images = true;
    }
  }

  const double cutsq = cutoff * cutoff;
  std::vector<Edge> edges;
  for (int64_t k = 0; k < d.n_listed; k++) {
    const int i = d.listed[k];
    // an image of a local atom sees what that atom sees (its list is complete): skip it
    if (fold && i >= d.nlocal && node_of[i] < d.nlocal) continue;
    const int64_t ni = node_of[i];
    const double *xi = x + 3 * graph.node_atom[ni];
    const int *neighbors = d.neighbors[i];
    for (int jj = 0; jj < d.count[i]; jj++) {
      const int j = neighbors[jj] & d.neighmask;
      const int64_t nj = node_of[j];
      const double *xj = x + 3 * graph.node_atom[nj];
      Shift s;
      for (int c = 0; c < 3; c++) s[c] = shift_of[j][c] - shift_of[i][c];
      // (x_j - x_i) + S·cell changes sign exactly with (i, j, S) → (j, i, -S): both directions pass or fail together
      double rsq = 0.0;
      for (int c = 0; c < 3; c++) {
        const double dx = (xj[c] - xi[c]) + (s[0] * d.cell[0][c] + s[1] * d.cell[1][c] + s[2] * d.cell[2][c]);
        rsq += dx * dx;
      }
      check_separation(rsq, d.tags[i], d.tags[j]);
      if (rsq < cutsq) edges.push_back({ni, nj, s});
    }
  }
  if (foreign_images) {
    std::sort(edges.begin(), edges.end());
    edges.erase(std::unique(edges.begin(), edges.end()), edges.end());
  }

  const size_t n_edges = edges.size();
  graph.edge_index.resize(2 * n_edges);
  graph.cell_shifts.resize(3 * n_edges);
  for (size_t e = 0; e < n_edges; e++) {
    graph.edge_index[e] = edges[e].i;
    graph.edge_index[n_edges + e] = edges[e].j;
    for (int c = 0; c < 3; c++) graph.cell_shifts[3 * e + c] = edges[e].s[c];
  }
  return graph;
}

template DomainGraph build_domain_graph<int>(const DomainView<int> &, double, bool);
template DomainGraph build_domain_graph<int64_t>(const DomainView<int64_t> &, double, bool);

}  // namespace petmd
