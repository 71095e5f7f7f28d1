from prosum_identity.cli import main

main()
