"""One module per section of bench/RESULTS.md, in the order the report gives them: throughput
(with the memory peaks its rounds record), latency, broker stopped, sustained, profile. Each
measures on the stack from `bench/harness/` and adds its section to the report."""
