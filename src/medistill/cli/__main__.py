"""``python -m medistill.cli``."""

from medistill.cli import main

main()
