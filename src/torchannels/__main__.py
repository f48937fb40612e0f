"""``python -m torchannels`` is the ``torchannels`` command."""

import sys

from .server.cli import main

sys.exit(main())
