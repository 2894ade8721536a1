import sys

from detect_ft.cli.main import main

sys.exit(main())
