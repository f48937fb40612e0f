"""``python -m torchannels`` is the ``torchannels`` command."""

import sys

from .cli import main

sys.exit(main())
