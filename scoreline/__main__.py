import sys

from scoreline.cli import main

sys.exit(main())
