"""The running proxy: the wiring (app), its state and reloads, the production hot path, the
upstream pools, the shadow dispatcher, recording, labels, the report's endpoints and the admin
API. Everything here owns a loop, a socket, a store or a metric."""
