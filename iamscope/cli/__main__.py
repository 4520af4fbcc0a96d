"""``python -m iamscope.cli``: the ``iamscope`` command."""

import sys

from iamscope.cli import main

sys.exit(main())
