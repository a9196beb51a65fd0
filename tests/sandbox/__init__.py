"""Conformance suite of the local control plane (deltaroll.sandbox)."""
