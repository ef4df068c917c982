"""Batched generation and scoring: many prompts in one forward pass, each row its own call.

``generation`` is the public API (results equal to single runs), ``decode`` the batched
loop (rows join and leave), ``step`` one batched step's processors, sampling and logprobs,
``scoring`` teacher-forced batches. May import the engine and the packages below it.
"""
