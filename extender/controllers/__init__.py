"""Controllers that act on the cluster from inside the extender process (leader-elected)."""
