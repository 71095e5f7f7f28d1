from prosum_orderbook.cli import main

main()
