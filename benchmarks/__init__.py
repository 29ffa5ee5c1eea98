"""Speed and quality benchmarks at larger scale; each bench_*.py prints a table."""
