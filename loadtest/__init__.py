"""Load-testing tools: model-server stand-ins and the benchmark; never imported by proxy/."""
