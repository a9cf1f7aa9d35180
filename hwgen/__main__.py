import sys

from hwgen.steps.cli import main

sys.exit(main())
