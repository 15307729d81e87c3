import sys

from fdk.cli import main

sys.exit(main())
