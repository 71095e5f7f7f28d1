from prosum_metering.cli import main

main()
