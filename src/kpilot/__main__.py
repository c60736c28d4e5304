from kpilot.cli.main import main

main()
