from spooler.cli.main import main

main()
