"""The results layer that the experiments (`prototok experiment`) and the benchmarks (`bench/`) share.

- `provenance`: what a number was measured on (CPU, GPU, platform, package versions);
- `rows`: a results.csv written a task at a time and read back on resume;
- `stats`: means, stds and the paper's "0.97±0.15" cells over rows that may hold gaps;
- `tables`: markdown tables;
- `timing`: the median wall time of a call, the GPU synchronised around it;
- `figures`: PNG figures of one or more panels (matplotlib, Agg backend).

Nothing here loads a model or knows about an experiment: the callers say what the rows hold.
"""
