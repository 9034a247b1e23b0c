"""One screen per view; each collects in a worker and draws from a Collected message."""
