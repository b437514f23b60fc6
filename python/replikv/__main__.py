"""``python -m replikv``: the same as the ``replikv`` command."""

from .cli import main

raise SystemExit(main())
