from kgedge.cli import main

main()
