"""The disconnected side: cluster.yaml, the phases of a deploy, transports to nodes."""
