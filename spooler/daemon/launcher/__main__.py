from spooler.daemon.launcher.process import main

main()
