"""Workflow steps: each reads its inputs, calls the compute, writes the store.

A job module exposes ``main(argv)``; rules call ``traitpipe job <name> ...``.
"""
