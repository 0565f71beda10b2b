"""`python -m data_prep` is the same as `dlrm-prep`."""

import sys

from data_prep.cli import main

sys.exit(main())
