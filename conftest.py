"""Root pytest configuration.

``mlx_gen/generate.py`` is the ``python -m mlx_gen.generate`` entry point; importing it
would rebind the package attribute ``mlx_gen.generate`` (the function) to that module
for the rest of the test session, so doctest collection skips it. The CLI tests run
it as a subprocess or through ``mlx_gen.cli.main``.
"""

collect_ignore = ["mlx_gen/generate.py", "benchmarks", "examples"]
