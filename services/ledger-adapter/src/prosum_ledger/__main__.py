from prosum_ledger.entrypoints.cli import main

main()
