from prosum_identity.entrypoints.cli import main

main()
