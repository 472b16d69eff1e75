//! Benchmarks for idem; see `benches/` and `docs/benchmarks.md`.
