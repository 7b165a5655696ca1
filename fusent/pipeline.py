"""The old name of ``fusent.train_flow`` (the training flow), kept as an alias so scripts written against it work:
``fusent.pipeline`` is that very module."""

import sys

from . import train_flow

sys.modules[__name__] = train_flow
