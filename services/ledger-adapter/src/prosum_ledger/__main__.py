from prosum_ledger.cli import main

main()
