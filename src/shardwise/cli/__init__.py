"""The `shardwise` command line: train, sample, run."""
