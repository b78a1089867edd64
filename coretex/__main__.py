from coretex.cli.main import main

main()
