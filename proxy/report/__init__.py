"""The report: its shape, the JSON of GET /report (model), the verdict built from metric samples
(build), its HTML page (html) and the `shadow-proxy report` command (cli). All but cli are pure."""
