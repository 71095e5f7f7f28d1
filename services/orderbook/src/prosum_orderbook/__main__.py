from prosum_orderbook.entrypoints.cli import main

main()
