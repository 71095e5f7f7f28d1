from prosum_settlement.entrypoints.cli import main

main()
