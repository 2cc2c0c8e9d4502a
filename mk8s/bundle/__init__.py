"""Bundles: the format (:mod:`.format`), the connected side's downloading
(:mod:`.upstream`) and provenance (:mod:`.provenance`); :mod:`.create` pins a release and
builds a bundle from all three, with the operator's workloads (:mod:`.workload_sources`).
"""
