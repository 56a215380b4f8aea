/* Message exchange for pair_style pet on LAMMPS's communication (docs/pair_pet.md, "exchange"): this rank's edges,
   the reverse of each, and petmd::MessageExchange over one row of values per atom (local and ghost), which the pair
   style's forward and reverse communication carries. LAMMPS glue only: the plain-array part is
   cpp/message_exchange.h, the network cpp/model.h. */
#ifndef LMP_PET_ROW_EXCHANGE_H
#define LMP_PET_ROW_EXCHANGE_H

#include "lmptype.h"

#include "domain_graph.h"
#include "message_exchange.h"
#include "model.h"

#include <cstdint>
#include <memory>
#include <vector>

namespace LAMMPS_NS {
class LAMMPS;
class Pair;

class PetRowExchange : public petmd::MessageExchange {
 public:
  // Values per atom that one LAMMPS communication call carries; wider rows (edges × d) go in several calls. The
  // pair style's comm_forward and comm_reverse (this many doubles per ghost of a swap).
  static constexpr int kValuesPerCall = 2048;

  PetRowExchange(LAMMPS *lmp, Pair *pair);

  // This rank's edges within the cutoff from its local atoms' neighbour lists. No communication: it may throw
  // petmd::Error (atoms on one site) on one rank alone, which the caller makes an error of every rank before any
  // collective call.
  void build_graph(const petmd::DomainView<tagint> &view, double cutoff);
  // This rank's share of the system on the graph just built: the reverse of each edge (found through exchanged
  // edge identities) and which edge rows travel. type_z: atomic number of each atom type. Collective; throws
  // petmd::Error on inconsistent input.
  petmd::ExchangeSystem prepare(const petmd::DomainView<tagint> &view, double cutoff, const std::vector<long> &type_z);

  // petmd::MessageExchange
  const std::vector<int64_t> &sent_edges() const override { return sent_edges_; }
  void forward(const double *sent_rows, int64_t d, double *ghost_rows) override;
  void reverse(const double *ghost_adjoint, int64_t d, double *sent_adjoint) override;

  // what the pair style's pack/unpack_{forward,reverse}_comm do
  int pack_forward(int n, const int *list, double *buf) const;
  void unpack_forward(int n, int first_atom, const double *buf);
  int pack_reverse(int n, int first_atom, double *buf) const;
  void unpack_reverse(int n, const int *list, const double *buf);

 private:
  void layout_rows(int64_t width);
  void layout_packed(int64_t d);
  void forward_rows();
  void reverse_rows();
  void row_part(int a, int64_t &first, int64_t &count) const;

  LAMMPS *lmp_;
  Pair *pair_;    // whose communication carries the rows
  std::unique_ptr<petmd::LocalGraph> graph_;
  std::unique_ptr<petmd::PackedRows> packed_;    // the edge slots whose tokens travel
  std::vector<int64_t> sent_edges_;              // local edge of each local packed row
  std::vector<int64_t> reverse_;                 // row of each local edge's reverse edge (message_exchange.h)
  std::vector<int64_t> numbers_;                 // atomic number of each local and ghost atom
  int64_t slots_ = 0;                            // edge slots per atom: the largest edge count on any rank
  int64_t most_packed_ = 0;                      // the most packed slots of one atom on any rank
  std::vector<double> rows_;                     // one row of values per atom, atom a's at row_start_[a] ..
  std::vector<int64_t> row_start_;               // [nall + 1]
  int64_t longest_row_ = 0;                      // on any rank
  int64_t first_value_ = 0;                      // of each row, where the current communication call starts
};

}    // namespace LAMMPS_NS

#endif
