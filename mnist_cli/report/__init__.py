"""Every word the tool prints, and every picture: one module per subject, imported by name.

``text`` (the shared helpers: numbers, NaN and inf, plurals, sparklines, wrapping), ``train``,
``evaluate``, ``predict``, ``compare`` (one per command's report), ``explain`` (every sentence about a
first non-finite step) and ``plots``. Each works from the JSON-able documents the pipelines build;
nothing here imports a command pipeline or ``mnist_cli.engine``. Importing the package imports none
of them.
"""
