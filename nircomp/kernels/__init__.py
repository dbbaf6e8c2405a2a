"""Op semantics as plain JAX functions: the single source both backends use.

Kernel modules import only jax, jax.numpy, jax.lax, numpy and math, so the source backend can embed
their text in a standalone module.
"""
