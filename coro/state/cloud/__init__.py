"""The hybrid runner's side of the team cloud: the WebSocket link (`link`), the
replication of jobs, logs and proposals (`replicator`), and the `CloudStateBackend`
over the local backend (`backend`)."""
