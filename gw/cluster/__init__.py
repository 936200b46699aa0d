"""Cluster: node registry, node-to-node calls, owner routing."""
