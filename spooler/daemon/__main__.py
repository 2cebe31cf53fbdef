import sys

from spooler.daemon.main import main

sys.exit(main())
