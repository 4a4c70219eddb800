from evoprog.search.cli import main

main()
