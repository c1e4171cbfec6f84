"""The Kubernetes sandbox backend: one hardened pod per terminal."""
