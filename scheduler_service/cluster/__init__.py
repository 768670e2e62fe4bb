"""Several processes on one database: who leads, who is alive, who is told of changes,
and what an operator sees of the deployment."""
