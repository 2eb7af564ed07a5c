"""`python -m declare.serve`: see `declare.serve.main`."""

import sys

from declare.serve.main import main

sys.exit(main())
