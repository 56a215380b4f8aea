#include "model_loader.h"

#include <dlfcn.h>

namespace petmd {

std::unique_ptr<Model> open_model_isolated(const std::string &library, const std::string &path,
                                           const std::string &device, int local_rank, int threads) {
  // never closed: libtorch does not support being unloaded
  void *handle = dlopen(library.c_str(), RTLD_NOW | RTLD_LOCAL | RTLD_DEEPBIND);
  if (handle == nullptr)
    throw Error("cannot load " + library + " (" + dlerror() + "): reinstall petmd (`pip install .`)");
  using Open = Model *(*)(const char *, const char *, int, int, std::string *);
  auto open = reinterpret_cast<Open>(dlsym(handle, "petmd_open_model"));
  if (open == nullptr) throw Error(library + " has no petmd_open_model: reinstall petmd (`pip install .`)");
  std::string error;
  Model *model = open(path.c_str(), device.c_str(), local_rank, threads, &error);
  if (model == nullptr) throw Error(error);
  return std::unique_ptr<Model>(model);
}

std::string this_library_folder() {
  Dl_info info;
  if (dladdr(reinterpret_cast<void *>(&this_library_folder), &info) == 0 || info.dli_fname == nullptr) return ".";
  const std::string file = info.dli_fname;
  const auto slash = file.rfind('/');
  return slash == std::string::npos ? "." : file.substr(0, slash);
}

}  // namespace petmd
