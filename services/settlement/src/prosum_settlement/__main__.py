from prosum_settlement.cli import main

main()
