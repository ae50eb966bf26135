"""Verdict audit trail: canonical signed records, hash chains, Merkle
checkpoints, write-once stores and the verifier.

This package must never import torch (or anything of `gateway`/`replay`): an
examiner verifies a trail with nothing but this package and its small
dependencies.
"""
