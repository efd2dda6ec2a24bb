"""The report: the verdict model built from metric samples (build), its HTML page (html) and
the `shadow-proxy report` command (cli). The model and the page are pure."""
