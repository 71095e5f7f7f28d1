from prosum_metering.entrypoints.cli import main

main()
