"""Every word the tool prints: text helpers, one module per command's report, the explanations, plots.

Reports are drawn from the JSON-able documents the pipelines build; nothing here imports a command
pipeline or ``mnist_cli.engine``.
"""

from mnist_cli.report.text import *  # noqa: F403  (the face of the package while it is split up)
