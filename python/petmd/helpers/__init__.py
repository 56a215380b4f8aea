"""What the examples, the demo, the benchmarks and the tests share beside petmd's core: standard structures
(structures), running LAMMPS's `lmp` (lammps_run), the examples' command lines (example_cli) and the demo's report
(report). The core (data, model, train, export, loading, calculator, symmetry, observables) does not import them."""
