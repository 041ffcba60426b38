"""The bundled example service used by ``make demo``, the tests and the benchmarks."""
