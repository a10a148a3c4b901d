from outcrop.cli.main import main

main()
