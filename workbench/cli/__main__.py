"""``python -m workbench.cli ...``: the same as the ``workbench`` console script."""

from . import main

main()
