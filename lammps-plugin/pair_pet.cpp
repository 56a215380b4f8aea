/* pair_style pet: a PET model exported by `petmd export`, run through libtorch. See docs/pair_pet.md.
   The methods LAMMPS calls (settings, coeff, init_style, compute, the communication hooks) and the symmetry terms
   compute pet/symmetry asks for: LAMMPS glue that cannot move to cpp/, hence ~450 lines; the message exchange is in
   pet_row_exchange.cpp. */

#include "pair_pet.h"

#include "atom.h"
#include "citeme.h"
#include "comm.h"
#include "compute_pet_uncertainty.h"
#include "domain.h"
#include "error.h"
#include "force.h"
#include "memory.h"
#include "modify.h"
#include "neigh_list.h"
#include "neighbor.h"
#include "update.h"
#include "utils.h"

#include "domain_graph.h"
#include "elements.h"
#include "model.h"
#include "model_loader.h"
#include "pet_row_exchange.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <map>
#include <mpi.h>
#include <sched.h>
#include <thread>

using namespace LAMMPS_NS;

static const char cite_pet[] = "pair_style pet (petmd), Point Edge Transformer:\n\n"
                               "@inproceedings{pozdnyakov2023pet,\n"
                               " author = {Pozdnyakov, Sergey N. and Ceriotti, Michele},\n"
                               " title = {Smooth, exact rotational symmetrization for deep learning on point clouds},\n"
                               " booktitle = {Advances in Neural Information Processing Systems},\n"
                               " volume = {36},\n"
                               " year = {2023}\n"
                               "}\n\n";

// cores this process may run on (CPU affinity, e.g. set by a batch scheduler), not all the node's
static int usable_cores()
{
#ifdef __linux__
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof(set), &set) == 0) return CPU_COUNT(&set);
#endif
  return static_cast<int>(std::thread::hardware_concurrency());
}

static const char usage[] = "pair_style pet MODEL [device cpu|cuda|cuda:N] [threads N] [fold yes|no] "
                            "[symmetrize none|random|grid G|ecse] [correction yes|no] [seed N] [chunk N] "
                            "[exchange auto|yes|no] [tf32 yes|no]";

// Sub-styles that name the same file on the same device share one loaded model (the fast and slow terms of
// multiple time stepping); each sets its own mode and chunk on it before every call (PairPET::model()).
static std::shared_ptr<petmd::Model> shared_model(const std::string &path, const std::string &device, int local_rank,
                                                  int threads)
{
  static std::map<std::string, std::weak_ptr<petmd::Model>> loaded;
  std::error_code unresolved;    // a missing file is the loader's to report
  const std::string key = std::filesystem::weakly_canonical(path, unresolved).string() + "\n" + device;
  if (auto model = loaded[key].lock()) return model;
  std::shared_ptr<petmd::Model> model = petmd::open_model_isolated(petmd::this_library_folder() + "/libpetmd_model.so",
                                                                   path, device, local_rank, threads);
  loaded[key] = model;
  return model;
}

// A call into the bridge (cpp/): its exception, which names the problem and the fix, becomes a LAMMPS error of
// this rank with `context` (the style the user wrote) in front.
template <typename Call> auto PairPET::bridged(const char *context, Call &&call) -> decltype(call())
{
  try {
    return call();
  } catch (const std::exception &err) {
    error->one(FLERR, "{}: {}", context, err.what());
  }
}

// A bridge call that every rank makes at the same point: a failure on any rank becomes error->all on all of them
// with the message of the lowest failing rank, which rank 0 prints once before the run ends. error->one would
// MPI_Abort, and the abort's teardown can drop the failing rank's own output, leaving no message at all.
template <typename Call> auto PairPET::bridged_on_all_ranks(const char *context, Call &&call) -> decltype(call())
{
  decltype(call()) value{};
  std::string message;
  try {
    value = call();
  } catch (const std::exception &err) {
    message = err.what();
  }
  const int mine = message.empty() ? comm->nprocs : comm->me;
  int first = comm->nprocs;
  MPI_Allreduce(&mine, &first, 1, MPI_INT, MPI_MIN, world);
  if (first < comm->nprocs) {
    int length = static_cast<int>(message.size());
    MPI_Bcast(&length, 1, MPI_INT, first, world);
    message.resize(length);
    MPI_Bcast(message.data(), length, MPI_CHAR, first, world);
    error->all(FLERR, "{}: {}", context, message);
  }
  return value;
}

PairPET::PairPET(LAMMPS *lmp) : Pair(lmp)
{
  single_enable = 0;
  restartinfo = 0;
  one_coeff = 1;
  manybody_flag = 1;
  ghostneigh = 1;    // until init_style: exchange yes needs no neighbour lists of ghosts
  // Communication buffers are sized from these before init_style (pair hybrid copies them when its sub-styles are
  // made), so they hold what message exchange needs whether or not this run uses it.
  comm_forward = comm_reverse = PetRowExchange::kValuesPerCall;
  no_virial_fdotr_compute = 1;    // the virial is the model's strain derivative, not sum r·f
  centroidstressflag = CENTROID_NOTAVAIL;
  if (lmp->citeme) lmp->citeme->add(cite_pet);
}

PairPET::~PairPET()
{
  if (allocated) {
    memory->destroy(setflag);
    memory->destroy(cutsq);
    memory->destroy(cutghost);
  }
}

void PairPET::allocate()
{
  allocated = 1;
  const int n = atom->ntypes + 1;
  memory->create(setflag, n, n, "pair:setflag");
  memory->create(cutsq, n, n, "pair:cutsq");
  memory->create(cutghost, n, n, "pair:cutghost");
  for (int i = 0; i < n; i++)
    for (int j = 0; j < n; j++) setflag[i][j] = 0;
  type_z_.assign(n, 0);
}

void PairPET::settings(int narg, char **arg)
{
  if (narg < 1) error->all(FLERR, "Illegal pair_style pet command: expected `{}`", usage);
  model_path_ = arg[0];
  std::string device = "cpu";
  std::string symmetrize;
  int threads = 0;
  chunk_ = -1;    // the model's default
  correction_ = false;
  fold_ = true;
  exchange_request_ = -1;
  tf32_ = false;
  seed_ = 20231201;
  for (int iarg = 1; iarg < narg; iarg += 2) {
    const std::string key = arg[iarg];
    if (iarg + 1 >= narg) error->all(FLERR, "pair_style pet: keyword '{}' needs a value: `{}`", key, usage);
    if (key == "device") {
      device = arg[iarg + 1];
    } else if (key == "threads") {
      threads = utils::inumeric(FLERR, arg[iarg + 1], false, lmp);
      if (threads < 1) error->all(FLERR, "pair_style pet: threads must be at least 1, got {}", threads);
    } else if (key == "fold") {
      fold_ = utils::logical(FLERR, arg[iarg + 1], false, lmp) == 1;
    } else if (key == "symmetrize") {
      // `grid G` is one mode, grid:G; the model checks the name
      symmetrize = arg[iarg + 1];
      if (symmetrize == "grid") {
        if (iarg + 2 >= narg)
          error->all(FLERR, "pair_style pet: `symmetrize grid` needs a grid name, e.g. `symmetrize grid 2i`");
        symmetrize += std::string(":") + arg[iarg + 2];
        iarg++;
      }
    } else if (key == "seed") {
      seed_ = utils::bnumeric(FLERR, arg[iarg + 1], false, lmp);
    } else if (key == "chunk") {
      chunk_ = utils::bnumeric(FLERR, arg[iarg + 1], false, lmp);
      if (chunk_ < 0)
        error->all(FLERR, "pair_style pet: chunk must be at least 0 atoms (0: never chunk), got {}", chunk_);
    } else if (key == "exchange") {
      const std::string value = arg[iarg + 1];
      exchange_request_ = value == "auto" ? -1 : utils::logical(FLERR, value, false, lmp);
    } else if (key == "tf32") {
      tf32_ = utils::logical(FLERR, arg[iarg + 1], false, lmp) == 1;
    } else if (key == "correction") {
      correction_ = utils::logical(FLERR, arg[iarg + 1], false, lmp) == 1;
    } else {
      error->all(FLERR, "pair_style pet: unknown keyword '{}': `{}`", key, usage);
    }
  }

  // ranks that share a node share its GPUs and cores
  MPI_Comm node;
  MPI_Comm_split_type(world, MPI_COMM_TYPE_SHARED, comm->me, MPI_INFO_NULL, &node);
  int local_rank = 0, local_size = 1;
  MPI_Comm_rank(node, &local_rank);
  MPI_Comm_size(node, &local_size);
  MPI_Comm_free(&node);
  if (threads == 0) threads = std::max(1, usable_cores() / local_size);

  model_.reset();
  bridged("pair_style pet", [&] {
    model_ = shared_model(model_path_, device, local_rank, threads);
    mode_ = symmetrize.empty() ? model_->info().symmetrize : symmetrize;
    model();    // the module checks the mode and the correction
    if (tf32_) model_->set_tf32(true);
  });
  if (allocated)
    for (int i = 0; i <= atom->ntypes; i++)
      for (int j = 0; j <= atom->ntypes; j++) setflag[i][j] = 0;
  if (comm->me == 0) report_model(threads);
}

petmd::Model &PairPET::model()
{
  model_->configure(mode_, correction_);
  model_->set_chunk_atoms(chunk_);
  return *model_;
}

int64_t PairPET::grid_size(const std::string &grid, const char *context)
{
  return bridged(context, [&] {
    return model().grid_size(grid);
  });
}

void PairPET::report_model(int threads)
{
  const auto &info = model_->info();
  std::string cost;    // a grid costs one evaluation of the network per rotation
  if (mode_.rfind("grid:", 0) == 0) {
    const auto rotations = grid_size(mode_.substr(5), "pair_style pet");
    cost = correction_ ? fmt::format(" (correction: {} rotations and the network as trained, {} evaluations per "
                                     "call)",
                                     rotations, rotations + 1)
                       : fmt::format(" ({0} rotations: {0} evaluations of the network per step)", rotations);
  } else if (correction_) {
    cost = " (correction: the mode minus the network as trained)";
  }
  std::string species, numbers;
  for (size_t k = 0; k < info.species.size(); k++) {
    species += (k ? " " : "") + info.species[k];
    numbers += (k ? " " : "") + std::to_string(info.atomic_numbers[k]);
  }
  utils::logmesg(lmp,
                 "pair_style pet: model {}\n"
                 "  species {} (Z = {}); cutoff {} A (smoothing width {} A); {} message-passing layers, "
                 "interaction range {} A\n"
                 "  network {}, symmetrization {}{}; exported by petmd {} with torch {}\n"
                 "  device {} (rank 0){}, {} torch thread(s) per MPI rank; periodic images of local atoms folded: {}\n"
                 "  cite: {}\n",
                 model_path_, species, numbers, info.cutoff, info.cutoff_width, info.n_gnn_layers,
                 info.interaction_range, info.dtype, mode_, cost, info.petmd_version, info.torch_version,
                 model_->device(), tf32_ ? " with TF32 matrix products" : "", threads, fold_ ? "yes" : "no",
                 info.citation);
  if (model_.use_count() > 1)
    utils::logmesg(lmp, "  the model is already loaded by another pet sub-style on this device: one copy, shared\n");
}

void PairPET::coeff(int narg, char **arg)
{
  if (!allocated) allocate();
  const auto &info = model_->info();
  std::string species;
  for (const auto &s : info.species) species += " " + s;
  const int ntypes = atom->ntypes;
  if (narg != 2 + ntypes || strcmp(arg[0], "*") != 0 || strcmp(arg[1], "*") != 0)
    error->all(FLERR,
               "pair_coeff for pair_style pet must be `pair_coeff * *` followed by one element symbol for each "
               "of the {} atom types (species of this model:{})",
               ntypes, species);
  for (int t = 1; t <= ntypes; t++) {
    const std::string symbol = arg[1 + t];
    auto found = std::find(info.species.begin(), info.species.end(), symbol);
    if (found == info.species.end())
      error->all(FLERR,
                 "pair_coeff: element '{}' given for atom type {} is not a species of model {}; its species "
                 "are:{}",
                 symbol, t, model_path_, species);
    type_z_[t] = info.atomic_numbers[found - info.species.begin()];
  }
  for (int i = 1; i <= ntypes; i++)
    for (int j = i; j <= ntypes; j++) setflag[i][j] = 1;
}

void PairPET::init_style()
{
  if (strcmp(update->unit_style, "metal") != 0)
    error->all(FLERR,
               "pair_style pet requires `units metal` (the model works in A and eV); this input uses "
               "`units {}`",
               update->unit_style);
  if (!force->newton_pair)
    error->all(FLERR, "pair_style pet requires `newton on`: forces on ghost atoms are sent back to their owners");
  if (!atom->tag_enable) error->all(FLERR, "pair_style pet requires atom IDs (`atom_modify id yes`)");
  if (comm->mode != Comm::SINGLE) error->all(FLERR, "pair_style pet requires `comm_modify mode single`");
  require_every_pair();
  check_type_masses();
  computed_ = 0;
  partner_ = nullptr;
  if (correction_) find_partner();

  // Message exchange (each rank evaluates its own atoms, trading edge tokens between layers) runs the network one
  // layer at a time; ECSE symmetrizes inside each layer, over the whole domain graph.
  const bool layered = mode_ != "ecse";
  if (exchange_request_ == 1 && !layered)
    error->all(FLERR, "pair_style pet: exchange yes cannot be combined with symmetrize ecse (it symmetrizes inside "
                      "each layer): use exchange no");
  if (exchange_request_ == 1 || (exchange_request_ == -1 && comm->nprocs > 1 && layered)) {
    // ghosts within the cutoff (+ skin) suffice: their edge tokens come from their owners
    ghostneigh = 0;
    exchange_rows_ = std::make_unique<PetRowExchange>(lmp, this);
    neighbor->add_request(this, NeighConst::REQ_FULL);
    if (comm->me == 0)
      utils::logmesg(lmp,
                     "pair_style pet: message exchange between ranks: each rank evaluates its own atoms, "
                     "ghost atoms within {} A\n",
                     model_->info().cutoff + neighbor->skin);
    return;
  }
  ghostneigh = 1;    // message passing within the domain needs the neighbours of ghosts too
  exchange_rows_.reset();
  neighbor->add_request(this, NeighConst::REQ_FULL | NeighConst::REQ_GHOST);

  // Message passing: a local atom's energy depends on every atom within n_layers × cutoff, so the ghost shell
  // must be that thick, plus the skin atoms may move through between neighbour-list rebuilds.
  const double ghost_cutoff = model_->info().interaction_range + neighbor->skin;
  if (comm->cutghostuser < ghost_cutoff) {
    comm->cutghostuser = ghost_cutoff;
    if (comm->me == 0)
      utils::logmesg(lmp, "pair_style pet: ghost atom cutoff set to {} A (interaction range {} + skin {})\n",
                     ghost_cutoff, model_->info().interaction_range, neighbor->skin);
  }
}

// Every pet style of this run: the pair style itself, or each pet sub-style of a hybrid.
std::vector<PairPET *> PairPET::instances(LAMMPS *lmp)
{
  std::vector<PairPET *> found;
  for (int k = 1;; k++) {    // the k-th pet sub-style of a hybrid
    auto *pet = dynamic_cast<PairPET *>(lmp->force->pair_match("pet", 1, k));
    if (!pet || std::find(found.begin(), found.end(), pet) != found.end()) break;
    found.push_back(pet);
  }
  if (found.empty())
    if (auto *pet = dynamic_cast<PairPET *>(lmp->force->pair_match("pet", 1))) found.push_back(pet);
  return found;
}

// Multiple time stepping: the correction (symmetrized − as trained) is the slow term of r-RESPA, the network as
// trained the fast one, each a pet sub-style of pair_style hybrid/overlay sharing one model.
void PairPET::find_partner()
{
  const std::string mode = mode_.rfind("grid:", 0) == 0 ? "grid " + mode_.substr(5) : mode_;
  // Outside r-RESPA both terms act every step: the symmetrized model, right but dearer than the mode alone. A
  // minimization wants exactly that; a Verlet run is told.
  if (strncmp(update->integrate_style, "respa", 5) != 0 && update->whichflag == 1 && comm->me == 0)
    error->warning(FLERR,
                   "pair_style pet: correction yes under run_style {} adds the correction every step, which is "
                   "symmetrize {} at more cost; multiple time stepping needs run_style respa with the hybrid "
                   "keyword, e.g. `run_style respa 2 4 hybrid 1 2`",
                   update->integrate_style, mode);
  for (auto *other : instances(lmp)) {
    if (other == this || other->correction_) continue;
    if (other->model_ != model_)
      error->all(FLERR,
                 "pair_style pet: the correction and the plain term must use one model file on one device, but "
                 "they name {} and {}",
                 model_path_, other->model_path_);
    if (other->mode_ != "none")
      error->all(FLERR,
                 "pair_style pet: the plain term of multiple time stepping must be the network as trained, but "
                 "its sub-style has symmetrize {}: drop that keyword from it",
                 other->mode_);
    partner_ = other;
  }
  if (!partner_)
    error->all(FLERR,
               "pair_style pet: correction yes needs its plain partner, a pet sub-style with the same model and "
               "no symmetrization: `pair_style hybrid/overlay pet {0} pet {0} symmetrize {1} correction yes`",
               model_path_, mode);
}

// r-RESPA computes the fast level n times per step of the slow one: a correction computed more often than its
// plain partner sits on a faster level than it.
void PairPET::check_level()
{
  if (partner_ && computed_ > partner_->computed_)
    error->all(FLERR, "pair_style pet: the correction is computed more often than the network as trained: put the "
                      "plain pet sub-style on the innermost respa level and the correction on an outer one, e.g. "
                      "`run_style respa 2 4 hybrid 1 2` for `pair_style hybrid/overlay pet M pet M ... correction "
                      "yes`");
}

// The model sees its neighbourhoods through LAMMPS's neighbour list, which leaves out the pairs of
// `neigh_modify exclude` and, in molecular systems, the bonded (1-2, 1-3, 1-4) pairs whose special_bonds weights are
// both 0 (unless a kspace style keeps them for its correction). No request flag keeps them for one style only, so,
// as LAMMPS's own styles that need every pair do, pair_style pet refuses those settings; other weights keep the pairs
// (flagged), and the model, which has no pairwise terms to weight, uses them all.
void PairPET::require_every_pair()
{
  if (neighbor->nex_type || neighbor->nex_group || neighbor->nex_mol)
    error->all(FLERR, "pair_style pet needs every pair within the model's cutoff, but `neigh_modify exclude` leaves "
                      "some out of the neighbour list: remove the exclusions (`neigh_modify exclude none`)");
  if (atom->molecular == Atom::ATOMIC || force->kspace) return;
  static const char *const neighbours[] = {"", "1-2 (bonded)", "1-3", "1-4"};
  for (int k = 1; k <= 3; k++)
    if (force->special_lj[k] == 0.0 && force->special_coul[k] == 0.0)
      error->all(FLERR,
                 "pair_style pet needs every pair within the model's cutoff, but with special_bonds weights 0 for "
                 "{} neighbours (LAMMPS's default) LAMMPS leaves those pairs of this molecular system out of the "
                 "neighbour list, so each molecule would be seen in pieces: add `special_bonds lj/coul 1.0 1.0 "
                 "1.0` before the run (pair_style pet does not use the weights)",
                 neighbours[k]);
}

// pair_coeff names the element of each atom type in type order; a list in another order gives, say, oxygen's atoms
// the mass of hydrogen, and the run goes on. A type whose mass is nearer another species' standard mass than its own
// element's is refused (isotopes and hydrogen mass repartitioning stay nearest their own element).
void PairPET::check_type_masses()
{
  if (atom->rmass_flag || !atom->mass) return;
  const auto &info = model_->info();
  for (int t = 1; t <= atom->ntypes; t++) {
    if (!atom->mass_setflag[t]) continue;
    const double mass = atom->mass[t];
    const auto given = std::find(info.atomic_numbers.begin(), info.atomic_numbers.end(), type_z_[t]);
    const auto &element = info.species[given - info.atomic_numbers.begin()];
    const double own = petmd::standard_mass(type_z_[t]);
    for (size_t k = 0; k < info.atomic_numbers.size(); k++) {
      const double other = petmd::standard_mass(info.atomic_numbers[k]);
      if (std::fabs(mass - other) < std::fabs(mass - own))
        error->all(FLERR,
                   "pair_coeff gives atom type {} the element {} (standard mass {}), but the type's mass {} is "
                   "nearer {}'s ({}): pair_coeff * * lists one element per atom type, in type order",
                   t, element, own, mass, info.species[k], other);
    }
  }
}

double PairPET::init_one(int i, int j)
{
  const double cutoff = model_->info().cutoff;
  cutghost[i][j] = cutghost[j][i] = cutoff;
  return cutoff;
}

void PairPET::compute(int eflag, int vflag)
{
  ev_init(eflag, vflag);
  computed_++;
  if (vflag_atom)
    error->all(FLERR, "pair_style pet does not compute per-atom virials (compute stress/atom, "
                      "centroid/stress/atom): the model gives the global virial only");

  seed_random_rotation();
  if (correction_) check_level();
  const bool with_uncertainty = uncertainty_wanted();
  if (exchange_rows_) {
    const auto result = evaluate_exchanged("pair_style pet", with_uncertainty);
    // ghosts' forces go to the ghosts: the reverse communication (newton on) adds them to their owners
    double **f = atom->f;
    const size_t n_all = result.forces.size() / 3;    // every atom the edges reach, local first
    for (size_t a = 0; a < n_all; a++)
      for (int c = 0; c < 3; c++) f[a][c] += result.forces[3 * a + c];
    tally(result);
    if (with_uncertainty) keep_uncertainty(&result);
    return;
  }
  const int nlocal = atom->nlocal;
  if (nlocal == 0) {    // an empty subdomain owns no energy, so it exerts no force
    if (with_uncertainty) keep_uncertainty(nullptr);
    return;
  }

  petmd::DomainGraph graph;
  const auto result = bridged("pair_style pet", [&] {
    return model().compute(build_system(graph), eflag_atom != 0, with_uncertainty);
  });
  if (with_uncertainty) keep_uncertainty(&result);

  // ghosts' forces go to the ghosts: the reverse communication (newton on) adds them to their owners
  double **f = atom->f;
  for (int64_t n = 0; n < graph.n_nodes(); n++) {
    const int64_t a = graph.node_atom[n];
    for (int c = 0; c < 3; c++) f[a][c] += result.forces[3 * n + c];
  }
  tally(result);
}

// Every rank, and every evaluation within a step, must use the same random rotation (symmetrize random).
void PairPET::seed_random_rotation()
{
  if (mode_ == "random") model_->set_random_seed(static_cast<uint64_t>(seed_ + update->ntimestep));
}

void PairPET::tally(const petmd::Result &result)
{
  if (eflag_global) eng_vdwl += result.energy;
  if (eflag_atom)
    for (int i = 0; i < atom->nlocal; i++) eatom[i] += result.energies[i];
  if (vflag_global) {
    const auto &w = result.virial;    // W[a][b] = sum r_a F_b: LAMMPS's order xx yy zz xy xz yz
    virial[0] += w[0];
    virial[1] += w[4];
    virial[2] += w[8];
    virial[3] += w[1];
    virial[4] += w[2];
    virial[5] += w[5];
  }
}

petmd::DomainView<tagint> PairPET::domain_view()
{
  const int nlocal = atom->nlocal;
  petmd::DomainView<tagint> domain_view;
  domain_view.nlocal = nlocal;
  domain_view.nall = nlocal + atom->nghost;
  domain_view.x = &atom->x[0][0];
  domain_view.tags = atom->tag;
  cell_[0][0] = domain->xprd;
  cell_[1][0] = domain->xy;
  cell_[1][1] = domain->yprd;
  cell_[2][0] = domain->xz;
  cell_[2][1] = domain->yz;
  cell_[2][2] = domain->zprd;
  for (int a = 0; a < 3; a++) {
    domain_view.periodic[a] = domain->periodicity[a] != 0;
    for (int b = 0; b < 3; b++) domain_view.cell[a][b] = cell_[a][b];
  }
  domain_view.n_listed = list->inum + list->gnum;
  domain_view.listed = list->ilist;
  domain_view.count = list->numneigh;
  domain_view.neighbors = list->firstneigh;
  domain_view.neighmask = NEIGHMASK;
  return domain_view;
}

petmd::SystemView PairPET::build_system(petmd::DomainGraph &graph)
{
  const int nlocal = atom->nlocal;
  graph = petmd::build_domain_graph(domain_view(), model_->info().cutoff, fold_);
  const int64_t n_nodes = graph.n_nodes();
  positions_.resize(3 * n_nodes);
  numbers_.resize(n_nodes);
  mask_.reset(new bool[n_nodes]);
  double **x = atom->x;
  const int *type = atom->type;
  for (int64_t n = 0; n < n_nodes; n++) {
    const int64_t a = graph.node_atom[n];
    for (int c = 0; c < 3; c++) positions_[3 * n + c] = x[a][c];
    numbers_[n] = type_z_[type[a]];
    mask_[n] = n < nlocal;
  }
  petmd::SystemView system;
  system.n_nodes = n_nodes;
  system.positions = positions_.data();
  system.atomic_numbers = numbers_.data();
  system.cell = &cell_[0][0];
  system.n_edges = graph.n_edges();
  system.edge_index = graph.edge_index.data();
  system.cell_shifts = graph.cell_shifts.data();
  system.energy_mask = mask_.get();
  return system;
}

PairPET::SymmetryTerms PairPET::symmetry_terms(const std::string &grid, double **dforce)
{
  SymmetryTerms terms;
  if (exchange_rows_) {    // every rank takes part, also one without atoms
    const auto system = prepare_exchange();
    const auto result = bridged("compute pet/symmetry", [&] {
      return model().compute_grid_exchanged(system, *exchange_rows_, grid);
    });
    for (int a = 0; a < system.n_all; a++)
      for (int c = 0; c < 3; c++) dforce[a][c] += result.forces[3 * a + c] - result.grid_forces[3 * a + c];
    terms.plain_energy = result.energy;
    terms.grid_energies = result.grid_energies;
    terms.grid_weights = result.grid_weights;
    return terms;
  }
  if (atom->nlocal == 0) {    // nothing owned: zero energy and forces in every rotation
    const auto probe = bridged("compute pet/symmetry", [&] {
      return model().compute_grid(petmd::SystemView{}, grid);
    });
    terms.grid_weights = probe.grid_weights;
    terms.grid_energies.assign(probe.grid_weights.size(), 0.0);
    return terms;
  }
  petmd::DomainGraph graph;
  const auto result = bridged("compute pet/symmetry", [&] {
    return model().compute_grid(build_system(graph), grid);
  });
  for (int64_t n = 0; n < graph.n_nodes(); n++)
    for (int c = 0; c < 3; c++)
      dforce[graph.node_atom[n]][c] += result.forces[3 * n + c] - result.grid_forces[3 * n + c];
  terms.plain_energy = result.energy;
  terms.grid_energies = result.grid_energies;
  terms.grid_weights = result.grid_weights;
  return terms;
}

/* ------------------------------------------------------------- uncertainty (compute pet/uncertainty) */

// Whether a pet/uncertainty compute that judges this style is wanted on this step: it then rides on the forces.
bool PairPET::uncertainty_wanted()
{
  for (auto *compute : modify->get_compute_by_style("pet/uncertainty")) {
    auto *uncertainty = dynamic_cast<ComputePETUncertainty *>(compute);
    if (uncertainty && uncertainty->source() == this && uncertainty->matchstep(update->ntimestep)) return true;
  }
  return false;
}

void PairPET::keep_uncertainty(const petmd::Result *result)
{
  uncertainty_.step = update->ntimestep;
  if (result == nullptr) {    // no local atoms: nothing to add
    uncertainty_.features.assign(static_cast<size_t>(model_->info().uncertainty_features), 0.0);
    uncertainty_.atom_extrapolation.clear();
    return;
  }
  uncertainty_.features = result->uncertainty_features;
  // nodes 0..nlocal-1 are the local atoms in order (build_system)
  uncertainty_.atom_extrapolation.assign(result->atom_extrapolation.begin(),
                                         result->atom_extrapolation.begin() + atom->nlocal);
}

const PairPET::UncertaintyShare &PairPET::uncertainty_share(const char *context)
{
  if (uncertainty_.step == update->ntimestep) return uncertainty_;
  check_uncertainty(context);
  seed_random_rotation();
  if (exchange_rows_) {    // every rank takes part, also one without atoms
    const auto result = evaluate_exchanged(context, true);
    keep_uncertainty(&result);
    return uncertainty_;
  }
  if (atom->nlocal == 0) {
    keep_uncertainty(nullptr);
    return uncertainty_;
  }
  petmd::DomainGraph graph;
  const auto result = bridged(context, [&] {
    return model().compute(build_system(graph), false, true);
  });
  keep_uncertainty(&result);
  return uncertainty_;
}

double PairPET::energy_uncertainty(const std::vector<double> &features, const char *context)
{
  return bridged(context, [&] {
    return model_->energy_uncertainty(features);
  });
}

void PairPET::check_uncertainty(const char *context)
{
  const auto &info = model_->info();
  if (!info.has_uncertainty)
    error->all(FLERR,
               "{}: {} (model format version {}) has no uncertainty calibration: export its checkpoint with "
               "`petmd export CHECKPOINT -o MODEL.pt --uncertainty` and use MODEL.pt (docs/uncertainty.md)",
               context, model_path_, info.format_version);
}

/* ---------------------------------------------------------------------- message exchange (docs/pair_pet.md) */

petmd::Result PairPET::evaluate_exchanged(const char *context, bool with_uncertainty)
{
  const auto system = prepare_exchange();
  return bridged(context, [&] {
    return model().compute_exchanged(system, *exchange_rows_, eflag_atom != 0, with_uncertainty);
  });
}

petmd::ExchangeSystem PairPET::prepare_exchange()
{
  const auto view = domain_view();
  const double cutoff = model_->info().cutoff;
  bridged_on_all_ranks("pair_style pet", [&] {
    exchange_rows_->build_graph(view, cutoff);
    return 0;
  });
  return bridged("pair_style pet", [&] {
    return exchange_rows_->prepare(view, cutoff, type_z_);
  });
}

int PairPET::pack_forward_comm(int n, int *list, double *buf, int /*pbc_flag*/, int * /*pbc*/)
{
  return exchange_rows_->pack_forward(n, list, buf);
}

void PairPET::unpack_forward_comm(int n, int first_atom, double *buf)
{
  exchange_rows_->unpack_forward(n, first_atom, buf);
}

int PairPET::pack_reverse_comm(int n, int first_atom, double *buf)
{
  return exchange_rows_->pack_reverse(n, first_atom, buf);
}

void PairPET::unpack_reverse_comm(int n, int *list, double *buf)
{
  exchange_rows_->unpack_reverse(n, list, buf);
}
