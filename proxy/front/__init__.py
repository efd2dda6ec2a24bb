"""The front process: production's lean hot path (an HTTP/1.1 server and a pooled client on
uvloop and httptools) and the hand-off of each exchange to the analysis process. It parses no
answer, no YAML and touches no store: nothing here may slow production down."""
