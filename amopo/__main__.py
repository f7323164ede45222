import sys

from amopo.cli import main

sys.exit(main())
