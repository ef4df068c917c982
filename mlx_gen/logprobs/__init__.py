"""Log-probability reports: what a logprob is in each mode, computed lazily in the step.

``report`` packs the chosen token, its rank, the sorted top-n and requested ids into one
array per step (and unpacks it on the host); ``logsumexp`` is the fused normaliser and
``top_n`` the exact block top-n. May import only mlx (no other mlx_gen package).
"""
