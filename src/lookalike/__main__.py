from lookalike.cli.app import main

main()
